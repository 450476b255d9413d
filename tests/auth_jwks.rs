//! The `jwt` authenticator against a local JWKS server on 127.0.0.1: key rotation without a
//! restart, background refresh on Cache-Control max-age, the unknown-`kid` cooldown under a
//! flood, last good keys while the provider is down, OIDC discovery, the example policies, and
//! the gateway end to end (401 challenges, credentials not forwarded upstream).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::keys::{b64, now, unique, Signer};
use common::*;
use graphguard::authn::jwt::config::JwtConfig;
use graphguard::authn::jwt::remote::KeySource;
use graphguard::authn::jwt::{JwtAuthenticator, JwtError, Refusal};
use graphguard::authn::{self, Authenticator};
use graphguard::policy::Policy;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// A local JWKS / discovery server
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct ServerState {
    keys: Vec<Value>,
    cache_control: Option<String>,
    status: u16,
    discovery_issuer: Option<String>,
    jwks_hits: u64,
    discovery_hits: u64,
}

struct JwksServer {
    service: LocalService,
    state: Arc<Mutex<ServerState>>,
}

impl JwksServer {
    async fn start(keys: Vec<Value>) -> JwksServer {
        let state = Arc::new(Mutex::new(ServerState {
            keys,
            status: 200,
            ..ServerState::default()
        }));
        let st = state.clone();
        let service = LocalService::start_with(move |addr| {
            move |req: Request<Incoming>| {
                let st = st.clone();
                async move { answer(&st, addr, &req) }
            }
        })
        .await;
        JwksServer { service, state }
    }

    fn base(&self) -> String {
        format!("http://{}", self.service.addr)
    }

    fn jwks_url(&self) -> String {
        format!("{}/jwks", self.base())
    }

    fn set_keys(&self, keys: Vec<Value>) {
        self.state.lock().unwrap().keys = keys;
    }

    fn set_status(&self, s: u16) {
        self.state.lock().unwrap().status = s;
    }

    fn set_cache_control(&self, v: &str) {
        self.state.lock().unwrap().cache_control = Some(v.into());
    }

    fn jwks_hits(&self) -> u64 {
        self.state.lock().unwrap().jwks_hits
    }

    fn discovery_hits(&self) -> u64 {
        self.state.lock().unwrap().discovery_hits
    }

    /// Stop listening and drop every open connection.
    fn stop(&self) {
        self.service.stop();
    }
}

fn answer(
    st: &Mutex<ServerState>,
    addr: SocketAddr,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let mut s = st.lock().unwrap();
    let mut r = Response::builder().header("content-type", "application/json");
    let body = match req.uri().path() {
        "/jwks" => {
            s.jwks_hits += 1;
            if s.status != 200 {
                return r
                    .status(s.status)
                    .body(Full::new(Bytes::from_static(b"{}")))
                    .unwrap();
            }
            if let Some(cc) = &s.cache_control {
                r = r.header("cache-control", cc.as_str());
            }
            json!({"keys": s.keys})
        }
        "/.well-known/openid-configuration" => {
            s.discovery_hits += 1;
            let issuer = s
                .discovery_issuer
                .clone()
                .unwrap_or_else(|| format!("http://{addr}"));
            json!({"issuer": issuer, "jwks_uri": format!("http://{addr}/jwks"), "id_token_signing_alg_values_supported": ["RS256", "ES256"]})
        }
        _ => return r.status(404).body(Full::new(Bytes::new())).unwrap(),
    };
    r.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const ISS: &str = "https://idp.test/";

fn authenticator(yaml: &str) -> JwtAuthenticator {
    let cfg: JwtConfig = serde_yaml_ng::from_str(yaml).unwrap();
    JwtAuthenticator::from_config(&cfg, None).unwrap()
}

fn jwks_authenticator(server: &JwksServer, refresh: &str) -> JwtAuthenticator {
    authenticator(&format!(
        "jwks_url: {}\nissuer: {ISS}\naudience: graphguard\njwks_refresh: {refresh}\n",
        server.jwks_url()
    ))
}

fn remote_fetches(a: &JwtAuthenticator) -> u64 {
    match a.key_source_ref() {
        KeySource::Remote(r) => r.fetch_count(),
        KeySource::Static(_) => 0,
    }
}

async fn identity(a: &JwtAuthenticator, token: &str) -> Result<String, JwtError> {
    a.authenticate_token(token)
        .await
        .map(|u| u.identity.clone())
        .map_err(|r| r.error().clone())
}

// ---------------------------------------------------------------------------------------------
// Rotation, refresh, cooldown, outage
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_are_accepted_without_restart() {
    let old = Signer::rs256("2024-rsa");
    let new = Signer::es256("2025-ec");
    let server = JwksServer::start(vec![old.jwk.clone()]).await;
    let a = jwks_authenticator(
        &server,
        "{interval_s: 3600, min_interval_s: 1, max_interval_s: 3600, unknown_kid_cooldown_s: 1}",
    );
    assert_eq!(
        server.jwks_hits(),
        0,
        "nothing is fetched before the first request"
    );
    let old_token = old.token("alice", ISS);
    assert_eq!(identity(&a, &old_token).await.unwrap(), "alice");
    assert_eq!(server.jwks_hits(), 1);

    // The provider rotates: the old key is retired, a new one (another type) published.
    server.set_keys(vec![new.jwk.clone()]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        identity(&a, &new.token("bob", ISS)).await.unwrap(),
        "bob",
        "new kid accepted after one refetch"
    );
    assert_eq!(server.jwks_hits(), 2);
    assert_eq!(identity(&a, &new.token("bob", ISS)).await.unwrap(), "bob");
    assert_eq!(server.jwks_hits(), 2, "known kid: no fetch");

    // The retired key no longer verifies, even for a token the cache had seen.
    assert_eq!(identity(&a, &old_token).await, Err(JwtError::UnknownKid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_refresh_honours_max_age_within_bounds() {
    let a_key = Signer::es256("a");
    let b_key = Signer::eddsa("b");
    let server = JwksServer::start(vec![a_key.jwk.clone()]).await;
    server.set_cache_control("public, max-age=1");
    let a = jwks_authenticator(
        &server,
        "{interval_s: 3600, min_interval_s: 1, max_interval_s: 3600, unknown_kid_cooldown_s: 3600}",
    );
    assert!(identity(&a, &a_key.token("alice", ISS)).await.is_ok());
    server.set_keys(vec![a_key.jwk.clone(), b_key.jwk.clone()]);
    // No traffic: the refresh task fetches on its own, every max-age second.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let hits = server.jwks_hits();
    assert!(hits >= 2, "background refresh on max-age=1: {hits} fetches");
    assert_eq!(
        identity(&a, &b_key.token("bob", ISS)).await.unwrap(),
        "bob",
        "picked up in the background; the cooldown forbids a refetch"
    );

    // max-age above max_interval_s is clamped down to it.
    let server2 = JwksServer::start(vec![a_key.jwk.clone()]).await;
    server2.set_cache_control("max-age=86400");
    let a2 = jwks_authenticator(
        &server2,
        "{interval_s: 1, min_interval_s: 1, max_interval_s: 1, unknown_kid_cooldown_s: 3600}",
    );
    assert!(identity(&a2, &a_key.token("alice", ISS)).await.is_ok());
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(
        server2.jwks_hits() >= 2,
        "max-age clamped to max_interval_s"
    );

    // Dropping the authenticator (a policy reload) ends its refresh task.
    drop(a2);
    let before = server2.jwks_hits();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(
        server2.jwks_hits() <= before + 1,
        "refresh task ends with its authenticator"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_flood_fetches_at_most_once_per_cooldown() {
    let good = Signer::es256("good");
    let attacker = Signer::es256("evil");
    let server = JwksServer::start(vec![good.jwk.clone()]).await;
    let a = Arc::new(jwks_authenticator(
        &server,
        "{interval_s: 3600, min_interval_s: 1, max_interval_s: 3600, unknown_kid_cooldown_s: 2}",
    ));

    // Tokens with made-up kids, signed up front so the flood itself is fast.
    let batch = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                attacker.with_kid(
                    &format!("made-up-{i}-{}", unique()),
                    &json!({"sub": "x", "iss": ISS, "aud": "graphguard", "exp": now() + 60}),
                )
            })
            .collect()
    };
    let batches = [batch(50), batch(50), batch(50)];
    assert!(identity(&a, &good.token("alice", ISS)).await.is_ok());
    assert_eq!(server.jwks_hits(), 1);
    let flood = |tokens: &[String]| {
        let handles: Vec<_> = tokens
            .iter()
            .map(|t| {
                let (a, t) = (a.clone(), t.clone());
                tokio::spawn(async move { a.authenticate_token(&t).await })
            })
            .collect();
        async move {
            for h in handles {
                assert_eq!(
                    h.await.unwrap().unwrap_err(),
                    Refusal::Rejected(JwtError::UnknownKid)
                );
            }
        }
    };
    // Within the cooldown of the first fetch: no fetch at all.
    flood(&batches[0]).await;
    assert_eq!(server.jwks_hits(), 1);
    // After it: one fetch for the whole flood, then none again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    flood(&batches[1]).await;
    assert_eq!(server.jwks_hits(), 2, "one fetch for 50 unknown kids");
    flood(&batches[2]).await;
    assert_eq!(server.jwks_hits(), 2);
    assert_eq!(remote_fetches(&a), 2);
    // Legitimate tokens never waited on the flood.
    assert!(identity(&a, &good.token("alice", ISS)).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_keeps_the_last_good_keys() {
    let k = Signer::es256("k1");
    let server = JwksServer::start(vec![k.jwk.clone()]).await;
    let a = jwks_authenticator(
        &server,
        "{interval_s: 1, min_interval_s: 1, max_interval_s: 1, unknown_kid_cooldown_s: 1}",
    );
    assert!(identity(&a, &k.token("alice", ISS)).await.is_ok());

    // First a failing provider (500), then a dead one (connection refused).
    server.set_status(500);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(server.jwks_hits() >= 2, "the refresh was attempted");
    assert_eq!(identity(&a, &k.token("alice", ISS)).await.unwrap(), "alice");
    server.stop();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let KeySource::Remote(r) = a.key_source_ref() else {
        panic!()
    };
    assert!(
        r.failure_count() >= 2,
        "refreshes keep failing: {}",
        r.failure_count()
    );
    // Fresh tokens (not in the verified-token cache) still verify with the kept keys.
    assert_eq!(identity(&a, &k.token("bob", ISS)).await.unwrap(), "bob");
    // An unknown kid cannot be fetched: refused, and the known one still works.
    let other = Signer::es256("k2");
    assert_eq!(
        identity(&a, &other.token("eve", ISS)).await,
        Err(JwtError::UnknownKid)
    );
    assert_eq!(identity(&a, &k.token("carol", ISS)).await.unwrap(), "carol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_from_the_start_is_503_until_it_answers() {
    let k = Signer::eddsa("k1");
    let server = JwksServer::start(vec![k.jwk.clone()]).await;
    server.set_status(503);
    let a = jwks_authenticator(
        &server,
        "{interval_s: 3600, min_interval_s: 1, max_interval_s: 3600, unknown_kid_cooldown_s: 1}",
    );
    let t = k.token("alice", ISS);
    assert_eq!(identity(&a, &t).await, Err(JwtError::KeysUnavailable));
    let e = JwtError::KeysUnavailable.to_gateway_error();
    assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(identity(&a, &t).await, Err(JwtError::KeysUnavailable));
    assert_eq!(server.jwks_hits(), 1, "retries wait for the cooldown");
    server.set_status(200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(identity(&a, &t).await.unwrap(), "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_discovery_finds_the_jwks() {
    let k = Signer::es256("d1");
    let server = JwksServer::start(vec![k.jwk.clone()]).await;
    let iss = server.base();
    let a = authenticator(&format!("issuer: {iss}\naudience: graphguard\n"));
    assert_eq!(
        identity(&a, &k.token("alice", &iss)).await.unwrap(),
        "alice"
    );
    assert_eq!((server.discovery_hits(), server.jwks_hits()), (1, 1));
    assert_eq!(identity(&a, &k.token("bob", &iss)).await.unwrap(), "bob");
    assert_eq!(
        (server.discovery_hits(), server.jwks_hits()),
        (1, 1),
        "both cached"
    );
    // A token from another issuer is declined (another authenticator may own it).
    assert_eq!(
        a.authenticate_token(&k.token("x", "https://other/")).await,
        Err(Refusal::Declined(JwtError::WrongIssuer))
    );

    // A discovery document naming another issuer is not trusted.
    let server2 = JwksServer::start(vec![k.jwk.clone()]).await;
    server2.state.lock().unwrap().discovery_issuer = Some("https://impostor.test".into());
    let iss2 = server2.base();
    let a2 = authenticator(&format!(
        "issuer: {iss2}\njwks_refresh: {{unknown_kid_cooldown_s: 1}}\n"
    ));
    assert_eq!(
        identity(&a2, &k.token("alice", &iss2)).await,
        Err(JwtError::KeysUnavailable)
    );
    assert_eq!(server2.jwks_hits(), 0);

    // An explicit discovery_url works the same way.
    let a3 = authenticator(&format!(
        "discovery_url: {iss}/.well-known/openid-configuration\n"
    ));
    assert_eq!(
        identity(&a3, &k.token("carol", &iss)).await.unwrap(),
        "carol"
    );
}

// ---------------------------------------------------------------------------------------------
// Policies and the gateway
// ---------------------------------------------------------------------------------------------

async fn run_auth(
    p: &Policy,
    authorization: &str,
) -> Result<String, graphguard::error::GatewayError> {
    let mut h = http::HeaderMap::new();
    h.insert(http::header::AUTHORIZATION, authorization.parse().unwrap());
    authn::authenticate(&p.authenticators, &h)
        .await
        .map(|u| u.identity.clone())
}

#[tokio::test]
async fn example_policies_load_without_network_and_authenticate() {
    // OIDC example: loads (nothing is fetched), one jwt authenticator with remote keys.
    let p = Policy::load_dir(&policy_dir("oidc")).unwrap();
    assert!(
        matches!(&p.authenticators[..], [Authenticator::Jwt(j)] if matches!(j.key_source_ref(), KeySource::Remote(_)))
    );

    // Supabase example: the documented local-development default secret applies when
    // SUPABASE_JWT_SECRET is unset.
    assert!(
        std::env::var("SUPABASE_JWT_SECRET").is_err(),
        "tests expect SUPABASE_JWT_SECRET unset"
    );
    let p = Policy::load_dir(&policy_dir("supabase-hs256")).unwrap();
    let secret = "super-secret-jwt-token-with-at-least-32-characters-long";
    let claims = json!({
        "sub": "8d2f1c4e-0000-4000-8000-000000000001", "aud": "authenticated", "role": "authenticated",
        "iss": "http://127.0.0.1:54321/auth/v1", "email": "alice@example.com",
        "app_metadata": {"provider": "email"}, "exp": now() + 3600, "iat": now(),
    });
    let t = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let [Authenticator::Jwt(j)] = &p.authenticators[..] else {
        panic!()
    };
    let u = j.authenticate_token(&t).await.unwrap();
    assert_eq!(u.display_name, "alice@example.com");
    assert_eq!(u.roles, ["authenticated"]);
    assert_eq!(u.attributes["provider"], "email");
    let e = run_auth(&p, &format!("Bearer {}", t.replace('.', ".x")))
        .await
        .unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    let anon = json!({"sub": "x", "aud": "anon-key", "role": "anon", "iss": "http://127.0.0.1:54321/auth/v1", "exp": now() + 60});
    let t = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &anon,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        run_auth(&p, &format!("Bearer {t}"))
            .await
            .unwrap_err()
            .detail,
        "Invalid token: audience not accepted"
    );
}

#[tokio::test]
async fn authenticator_chains_decline_reject_and_anonymous() {
    let k = Signer::es256("c1");
    let jwks = json!({"keys": [k.jwk]});
    let dir = tempfile::tempdir().unwrap();
    // Key files live outside the policy directory's own files (a *.json there is a policy file).
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/jwks.json"), jwks.to_string()).unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        format!(
            "authenticators:\n  - jwt: {{jwks_file: keys/jwks.json, issuer: {ISS}, audience: graphguard}}\n{}\n  - anonymous: {{identity: anonymous, roles: [public]}}\nhandlers:\n  \"*\": {{allow: true}}\n",
            demo_authenticators().split_once("authenticators:\n").unwrap().1.trim_end().lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n")
        ),
    )
    .unwrap();
    let p = Policy::load_dir(dir.path()).unwrap();
    assert_eq!(p.authenticators.len(), 3);
    // A JWT for our issuer; an API key (not a JWT: the jwt authenticator declines it).
    assert_eq!(
        run_auth(&p, &format!("Bearer {}", k.token("alice", ISS)))
            .await
            .unwrap(),
        "alice"
    );
    assert_eq!(run_auth(&p, ALICE).await.unwrap(), "alice");
    // A JWT from another issuer: declined by jwt, declined by api_key (not one of its keys),
    // never anonymous: the first decline's reason is the answer.
    let e = run_auth(&p, &format!("Bearer {}", k.token("x", "https://other/")))
        .await
        .unwrap_err();
    assert_eq!(e.detail, "Invalid token: issuer not accepted");
    // A bearer value neither recognises: the first decline's answer (the JWT authenticator
    // comes first here), a 401 all the same, never anonymous.
    let e = run_auth(&p, "Bearer not-a-key").await.unwrap_err();
    assert_eq!(e.detail, "Invalid token: malformed");
    assert_eq!(e.status, http::StatusCode::UNAUTHORIZED);
    // A bad JWT is rejected, never downgraded to anonymous.
    let mut bad = k.token("alice", ISS);
    bad.push('A');
    assert_eq!(
        run_auth(&p, &format!("Bearer {bad}"))
            .await
            .unwrap_err()
            .detail,
        "Invalid token: signature verification failed"
    );
    // No credentials at all: anonymous.
    let u = authn::authenticate(&p.authenticators, &http::HeaderMap::new())
        .await
        .unwrap();
    assert_eq!(
        (u.identity.as_str(), u.roles.as_slice()),
        ("anonymous", ["public".to_string()].as_slice())
    );

    // Without the API keys, a foreign-issuer token gets the jwt authenticator's reason, and
    // anonymous does not swallow it.
    std::fs::write(
        dir.path().join("a.yaml"),
        format!("authenticators:\n  - jwt: {{jwks_file: keys/jwks.json, issuer: {ISS}}}\n  - anonymous: {{identity: anonymous}}\nhandlers:\n  \"*\": {{allow: true}}\n"),
    )
    .unwrap();
    let p = Policy::load_dir(dir.path()).unwrap();
    let e = run_auth(&p, &format!("Bearer {}", k.token("x", "https://other/")))
        .await
        .unwrap_err();
    assert_eq!(e.detail, "Invalid token: issuer not accepted");
    let e = run_auth(&p, "Bearer not-a-jwt").await.unwrap_err();
    assert_eq!(e.detail, "Invalid token: malformed");

    // Two kinds in one entry, or none, is a load error.
    std::fs::write(
        dir.path().join("a.yaml"),
        "authenticators:\n  - {jwt: {jwks_file: keys/jwks.json}, anonymous: {identity: a}}\n",
    )
    .unwrap();
    let errs = Policy::load_dir(dir.path()).unwrap_err();
    assert!(errs[0].message.contains("exactly one kind"), "{errs:?}");
    std::fs::write(
        dir.path().join("a.yaml"),
        "authenticators:\n  - jwt: {jwks_url: \"not a url\"}\n",
    )
    .unwrap();
    let errs = Policy::load_dir(dir.path()).unwrap_err();
    assert!(
        errs[0]
            .to_string()
            .contains("authenticators[0].jwt: jwks_url"),
        "{errs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_with_jwt_isolates_users_and_strips_the_token() {
    let alice_key = Signer::es256("gw-1");
    let server = JwksServer::start(vec![alice_key.jwk.clone()]).await;
    let up = MockUpstream::start().await;
    let policy = format!(
        "authenticators:\n  - jwt:\n      jwks_url: {}\n      issuer: {ISS}\n      audience: [other, graphguard]\n      claims: {{display_name: name}}\nhandlers:\n  \"*\":\n    metadata: {{ owner: \"{{user.identity}}\" }}\n    filter: {{ owner: \"{{user.identity}}\" }}\n",
        server.jwks_url()
    );
    let gw = start_gateway(
        &up.url(),
        GatewayOptions {
            policy: PolicySource::Yaml(policy),
            ..GatewayOptions::default()
        },
    )
    .await;
    let alice = format!("Bearer {}", alice_key.sign(&json!({"sub": "alice", "name": "Alice", "iss": ISS, "aud": "graphguard", "exp": now() + 600})));
    let bob = format!("Bearer {}", alice_key.token("bob", ISS));

    let r = req(Method::POST, "/threads")
        .auth(&alice)
        .json(&json!({}))
        .send(&gw)
        .await;
    r.assert_status(200);
    let seen = up.one_forwarded();
    assert_eq!(
        seen.header("x-graphguard-user-id").as_deref(),
        Some("alice")
    );
    assert_eq!(
        seen.header("x-graphguard-user-display-name").as_deref(),
        Some("Alice")
    );
    assert_eq!(
        seen.header("authorization"),
        None,
        "the token is not forwarded upstream"
    );
    assert_eq!(seen.json()["metadata"]["owner"], "alice");

    let tid = up.add_thread("alice");
    req(Method::GET, format!("/threads/{tid}"))
        .auth(&alice)
        .send(&gw)
        .await
        .assert_status(200);
    req(Method::GET, format!("/threads/{tid}"))
        .auth(&bob)
        .send(&gw)
        .await
        .assert_status(404);

    // Refusals: 401 with a Bearer invalid_token challenge and a precise detail.
    let expired = format!(
        "Bearer {}",
        alice_key
            .sign(&json!({"sub": "alice", "iss": ISS, "aud": "graphguard", "exp": now() - 3600}))
    );
    let wrong_aud = format!(
        "Bearer {}",
        alice_key.sign(&json!({"sub": "alice", "iss": ISS, "aud": "nope", "exp": now() + 60}))
    );
    let none = format!(
        "Bearer {}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(
            json!({"sub": "admin", "iss": ISS, "aud": "graphguard", "exp": now() + 60})
                .to_string()
                .as_bytes()
        )
    );
    for (auth, detail) in [
        (expired.as_str(), "Invalid token: expired"),
        (wrong_aud.as_str(), "Invalid token: audience not accepted"),
        (
            none.as_str(),
            "Invalid token: unsigned tokens (alg none) are refused",
        ),
        ("Bearer abc.def.ghi", "Invalid token: malformed"),
    ] {
        let r = req(Method::POST, "/threads/search")
            .auth(auth)
            .json(&json!({}))
            .send(&gw)
            .await;
        r.assert_status(401);
        assert_eq!(r.detail(), detail);
        assert_eq!(
            r.header("www-authenticate").unwrap(),
            format!("Bearer error=\"invalid_token\", error_description=\"{detail}\"")
        );
    }
    let r = req(Method::POST, "/threads/search")
        .json(&json!({}))
        .send(&gw)
        .await;
    r.assert_status(401);
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_credentials_true_keeps_the_token_upstream() {
    let k = Signer::es256("fc");
    let dir = tempfile::tempdir().unwrap();
    let up = MockUpstream::start().await;
    std::fs::write(
        dir.path().join("jwks.json"),
        json!({"keys": [k.jwk]}).to_string(),
    )
    .unwrap();
    let policy = format!(
        "authenticators:\n  - jwt: {{jwks_file: {}, forward_credentials: true}}\nhandlers:\n  \"*\": {{allow: true}}\n",
        dir.path().join("jwks.json").display()
    );
    let gw = start_gateway(
        &up.url(),
        GatewayOptions {
            policy: PolicySource::Yaml(policy),
            ..GatewayOptions::default()
        },
    )
    .await;
    let t = format!("Bearer {}", k.token("alice", ISS));
    req(Method::POST, "/threads")
        .auth(&t)
        .json(&json!({}))
        .send(&gw)
        .await
        .assert_status(200);
    assert_eq!(up.one_forwarded().header("authorization"), Some(t));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_provider_does_not_block_another_issuers_tokens() {
    let a_key = Signer::es256("a");
    let b_key = Signer::eddsa("b");
    let down = JwksServer::start(vec![a_key.jwk.clone()]).await;
    down.set_status(503);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(
        dir.path().join("keys/b.jwks"),
        json!({"keys": [b_key.jwk]}).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        format!(
            "authenticators:\n  - jwt: {{jwks_url: {}, issuer: https://a.test/}}\n  - jwt: {{jwks_file: keys/b.jwks, issuer: https://b.test/}}\n",
            down.jwks_url()
        ),
    )
    .unwrap();
    let p = Policy::load_dir(dir.path()).unwrap();
    assert_eq!(
        run_auth(
            &p,
            &format!("Bearer {}", b_key.token("bob", "https://b.test/"))
        )
        .await
        .unwrap(),
        "bob"
    );
    assert_eq!(down.jwks_hits(), 0, "a foreign token does not make A fetch");
    let e = run_auth(
        &p,
        &format!("Bearer {}", a_key.token("alice", "https://a.test/")),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (e.status, e.detail.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Token signing keys unavailable"
        )
    );
    assert_eq!(down.jwks_hits(), 1);
    assert_eq!(
        run_auth(
            &p,
            &format!("Bearer {}", b_key.token("bob", "https://b.test/"))
        )
        .await
        .unwrap(),
        "bob"
    );
}
