//! JWT verification cost: RS256, ES256, EdDSA and HS256, cold (signature verification and claim
//! checks every time) and through the verified-token cache (SHA-256 of the token + a cache
//! hit). Prints the cached/cold ratio per algorithm at the end.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use graphguard::authn::jwt::config::JwtConfig;
use graphguard::authn::jwt::keys::KeySet;
use graphguard::authn::jwt::JwtAuthenticator;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

#[path = "../tests/common/keys.rs"]
mod keys;

use keys::Pair;

const SECRET: &str = "bench-secret-bench-secret-bench-secret-0123456789";

struct Case {
    name: &'static str,
    auth: JwtAuthenticator,
    keys: KeySet,
    token: String,
}

fn write_temp(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_default();
    p.display().to_string()
}

fn case(name: &'static str, key_yaml: String, alg: Algorithm, enc: EncodingKey) -> Option<Case> {
    let cfg: JwtConfig = serde_yaml_ng::from_str(&format!(
        "{key_yaml}\nissuer: https://idp.bench/\naudience: graphguard\nclaims: {{permissions: scope, roles: realm_access.roles}}\n"
    ))
    .ok()?;
    let auth = JwtAuthenticator::from_config(&cfg, None).ok()?;
    let keys = auth.static_keys()?.as_ref().clone();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs()
        + 86_400;
    let claims = json!({
        "sub": "user-123", "iss": "https://idp.bench/", "aud": "graphguard", "exp": exp,
        "iat": exp - 86_400, "scope": "threads:read threads:create", "realm_access": {"roles": ["user"]},
    });
    let token = jsonwebtoken::encode(&Header::new(alg), &claims, &enc).ok()?;
    auth.verify_uncached(&token, &keys).ok()?;
    Some(Case {
        name,
        auth,
        keys,
        token,
    })
}

fn cases() -> Vec<Case> {
    let dir = std::env::temp_dir().join(format!("graphguard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_default();
    let mut out = Vec::new();
    let pems: [(&'static str, &str, Algorithm, Pair); 3] = [
        ("RS256", "rsa.pem", Algorithm::RS256, keys::rsa_pair()),
        ("ES256", "ec.pem", Algorithm::ES256, keys::p256_pair()),
        ("EdDSA", "ed.pem", Algorithm::EdDSA, keys::ed_pair()),
    ];
    for (name, file, alg, pair) in pems {
        let f = write_temp(&dir, file, &pair.public_pem);
        let private = pair.private_pem.as_bytes();
        let enc = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(private),
            Algorithm::ES256 => EncodingKey::from_ec_pem(private),
            _ => EncodingKey::from_ed_pem(private),
        };
        if let Ok(enc) = enc {
            out.extend(case(name, format!("public_key: {{file: {f}}}"), alg, enc));
        }
    }
    let f = write_temp(&dir, "secret", SECRET);
    out.extend(case(
        "HS256",
        format!("secret: {{file: {f}}}"),
        Algorithm::HS256,
        EncodingKey::from_secret(SECRET.as_bytes()),
    ));
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn per_call(mut f: impl FnMut(), budget: Duration) -> Duration {
    let mut n: u32 = 0;
    let start = Instant::now();
    while start.elapsed() < budget {
        for _ in 0..16 {
            f();
        }
        n += 16;
    }
    start.elapsed() / n.max(1)
}

fn bench(c: &mut Criterion) {
    let cases = cases();
    let mut g = c.benchmark_group("jwt_verify");
    for k in &cases {
        g.bench_with_input(BenchmarkId::new("cold", k.name), k, |b, k| {
            b.iter(|| black_box(k.auth.verify_uncached(black_box(&k.token), &k.keys).is_ok()))
        });
        g.bench_with_input(BenchmarkId::new("cached", k.name), k, |b, k| {
            b.iter(|| {
                black_box(
                    k.auth
                        .authenticate_with_keys(black_box(&k.token), &k.keys)
                        .is_ok(),
                )
            })
        });
    }
    g.finish();
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --benches`: criterion's quick test mode, no timing report
    }
    eprintln!("\ncached/cold per-call time (lower is better):");
    for k in &cases {
        let cold = per_call(
            || drop(black_box(k.auth.verify_uncached(&k.token, &k.keys))),
            Duration::from_millis(500),
        );
        let cached = per_call(
            || drop(black_box(k.auth.authenticate_with_keys(&k.token, &k.keys))),
            Duration::from_millis(500),
        );
        eprintln!(
            "  {:<6} cold {:>10.2?}  cached {:>8.2?}  ratio {:.4} ({:.0}x faster)",
            k.name,
            cold,
            cached,
            cached.as_secs_f64() / cold.as_secs_f64(),
            cold.as_secs_f64() / cached.as_secs_f64()
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
