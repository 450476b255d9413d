//! The one set of test keys: real RSA, P-256, P-384 and Ed25519 key pairs (private PEM for
//! signing, public PEM, public JWK), and [`Signer`]s that sign tokens under a `kid`. Shared by
//! the unit tests (`authn::jwt`), the integration tests (through `tests/common`) and the JWT
//! bench, each including this file.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

/// One key pair: private PEM (for signing), public PEM, and its public JWK.
pub struct Pair {
    pub private_pem: String,
    pub public_pem: String,
    pub jwk: Value,
}

/// base64url without padding, as JWKs spell their numbers.
pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A fresh RSA-2048 pair.
pub fn rsa_pair() -> Pair {
    let k = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let public = k.to_public_key();
    Pair {
        private_pem: k.to_pkcs1_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: public.to_public_key_pem(LineEnding::LF).unwrap(),
        jwk: json!({"kty": "RSA", "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be())}),
    }
}

/// A fresh P-256 pair.
pub fn p256_pair() -> Pair {
    let k = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let point = k.public_key().to_encoded_point(false);
    Pair {
        private_pem: k.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: k.public_key().to_public_key_pem(LineEnding::LF).unwrap(),
        jwk: json!({"kty": "EC", "crv": "P-256", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())}),
    }
}

/// A fresh P-384 pair.
pub fn p384_pair() -> Pair {
    let k = p384::SecretKey::random(&mut rand::rngs::OsRng);
    let point = k.public_key().to_encoded_point(false);
    Pair {
        private_pem: k.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: k.public_key().to_public_key_pem(LineEnding::LF).unwrap(),
        jwk: json!({"kty": "EC", "crv": "P-384", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())}),
    }
}

/// A fresh Ed25519 pair.
pub fn ed_pair() -> Pair {
    let k = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    Pair {
        private_pem: k.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: k.verifying_key().to_public_key_pem(LineEnding::LF).unwrap(),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.verifying_key().as_bytes())}),
    }
}

/// The shared keys: two RSA pairs (the second for "wrong key"), P-256, P-384, Ed25519.
pub struct Keys {
    pub rsa: Pair,
    pub rsa2: Pair,
    pub p256: Pair,
    pub p384: Pair,
    pub ed: Pair,
}

/// The shared keys, generated once per test binary.
pub fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| Keys {
        rsa: rsa_pair(),
        rsa2: rsa_pair(),
        p256: p256_pair(),
        p384: p384_pair(),
        ed: ed_pair(),
    })
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A fresh signing key with its public JWK (carrying `kid`).
pub struct Signer {
    pub kid: String,
    pub alg: Algorithm,
    pub key: EncodingKey,
    pub jwk: Value,
}

/// A JWK with extra members (`kid`, `use`, `alg`) added.
fn with_members(mut jwk: Value, extra: Value) -> Value {
    if let (Some(o), Some(e)) = (jwk.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    jwk
}

impl Signer {
    /// ES256 on a fresh P-256 key.
    pub fn es256(kid: &str) -> Signer {
        let p = p256_pair();
        Signer {
            kid: kid.into(),
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_pem(p.private_pem.as_bytes()).unwrap(),
            jwk: with_members(p.jwk, json!({"kid": kid, "use": "sig"})),
        }
    }

    /// EdDSA on a fresh Ed25519 key.
    pub fn eddsa(kid: &str) -> Signer {
        let p = ed_pair();
        Signer {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            key: EncodingKey::from_ed_pem(p.private_pem.as_bytes()).unwrap(),
            jwk: with_members(p.jwk, json!({"kid": kid})),
        }
    }

    /// RS256 on a fresh RSA-2048 key.
    pub fn rs256(kid: &str) -> Signer {
        let p = rsa_pair();
        Signer {
            kid: kid.into(),
            alg: Algorithm::RS256,
            key: EncodingKey::from_rsa_pem(p.private_pem.as_bytes()).unwrap(),
            jwk: with_members(p.jwk, json!({"kid": kid, "alg": "RS256"})),
        }
    }

    /// Sign claims under this signer's `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        self.with_kid(&self.kid, claims)
    }

    /// A token for `sub`, issued by `iss` for audience `graphguard`.
    pub fn token(&self, sub: &str, iss: &str) -> String {
        self.sign(&json!({"sub": sub, "iss": iss, "aud": "graphguard", "exp": now() + 600, "iat": now(), "jti": unique()}))
    }

    /// The same key under another `kid` (a made-up `kid`).
    pub fn with_kid(&self, kid: &str, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }
}

/// A token id unique within the run.
pub fn unique() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", now(), N.fetch_add(1, Ordering::Relaxed))
}
