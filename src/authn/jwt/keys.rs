//! Verification keys: a PEM public key or an HMAC secret, and JWKS documents (a static file
//! or fetched by [`super::remote`]), matched to a token by `kid` and algorithm. Keys never
//! come from the token itself (`jku`, `x5u`, `jwk` headers are ignored).

use std::str::FromStr;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// Every RSA algorithm.
pub const RSA_ALGS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
/// Every HMAC algorithm.
pub const HMAC_ALGS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// One verification key and the algorithms it may verify.
#[derive(Debug, Clone)]
pub struct VerifyKey {
    /// Its `kid`, if any.
    pub kid: Option<String>,
    /// The key.
    pub key: DecodingKey,
    /// Algorithms it verifies (its type's, narrowed by its `alg` and the allow-list).
    pub algorithms: Vec<Algorithm>,
}

/// A set of keys, as fetched or loaded once.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    /// Increases with every successful fetch.
    pub generation: u64,
    /// The keys.
    pub keys: Vec<VerifyKey>,
}

/// The keys that may verify a token.
#[derive(Debug)]
pub enum KeyMatch<'a> {
    /// Try these, in order.
    Keys(Vec<&'a VerifyKey>),
    /// The token names a `kid` the set does not have.
    UnknownKid,
    /// Keys exist for the token, but none for its algorithm.
    WrongAlgorithm,
}

impl KeySet {
    /// Keys for a token's `kid` and `alg`. A token with a `kid` matches keys with that `kid`, or
    /// keys without any `kid` (a PEM key or secret); a token without one matches every key.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> KeyMatch<'_> {
        let named: Vec<&VerifyKey> = match kid {
            Some(kid) => {
                let exact: Vec<&VerifyKey> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if exact.is_empty() {
                    self.keys.iter().filter(|k| k.kid.is_none()).collect()
                } else {
                    exact
                }
            }
            None => self.keys.iter().collect(),
        };
        if named.is_empty() {
            return KeyMatch::UnknownKid;
        }
        let fit: Vec<&VerifyKey> = named
            .into_iter()
            .filter(|k| k.algorithms.contains(&alg))
            .collect();
        if fit.is_empty() {
            KeyMatch::WrongAlgorithm
        } else {
            KeyMatch::Keys(fit)
        }
    }

    /// Whether a key with this `kid` (or a key without `kid`) is still in the set.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys
            .iter()
            .any(|k| k.kid.is_none() || k.kid.as_deref() == Some(kid))
    }
}

fn b64url(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| "invalid base64url".to_string())
}

/// Parse a JWKS document. Keys that cannot be used (encryption keys, unsupported types or
/// curves, RSA under 2048 bits, algorithms outside `allowed`) are skipped with a warning;
/// symmetric (`oct`) keys only when `allow_secret`.
pub fn parse_jwks(
    bytes: &[u8],
    allowed: &[Algorithm],
    allow_secret: bool,
) -> Result<Vec<VerifyKey>, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let keys = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("JWKS has no \"keys\" list")?;
    let mut out = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        match jwk_to_key(k, allowed, allow_secret) {
            Ok(Some(key)) => out.push(key),
            Ok(None) => {}
            Err(m) => tracing::warn!(
                index = i,
                kid = k
                    .get("kid")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("-"),
                "JWKS key skipped: {m}"
            ),
        }
    }
    Ok(out)
}

/// A JWK's key material by type (`kty`), checked for size, and its algorithm family.
fn decoding_key(k: &Value, allow_secret: bool) -> Result<(DecodingKey, Vec<Algorithm>), String> {
    let s = |name: &str| k.get(name).and_then(Value::as_str);
    let need = |name: &str| s(name).ok_or_else(|| format!("missing \"{name}\""));
    Ok(match s("kty") {
        Some("RSA") => {
            let n = b64url(need("n")?)?;
            let e = b64url(need("e")?)?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return Err(format!("RSA key of {bits} bits (2048 at least)"));
            }
            (
                DecodingKey::from_rsa_raw_components(&n, &e),
                RSA_ALGS.to_vec(),
            )
        }
        Some("EC") => {
            let (alg, len) = match s("crv") {
                Some("P-256") => (Algorithm::ES256, 32),
                Some("P-384") => (Algorithm::ES384, 48),
                other => return Err(format!("unsupported EC curve {other:?}")),
            };
            let (x, y) = (b64url(need("x")?)?, b64url(need("y")?)?);
            if x.len() != len || y.len() != len {
                return Err("EC coordinates of the wrong size".into());
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (DecodingKey::from_ec_der(&point), vec![alg])
        }
        Some("OKP") => {
            if s("crv") != Some("Ed25519") {
                return Err(format!("unsupported OKP curve {:?}", s("crv")));
            }
            let x = b64url(need("x")?)?;
            if x.len() != 32 {
                return Err("Ed25519 key of the wrong size".into());
            }
            (DecodingKey::from_ed_der(&x), vec![Algorithm::EdDSA])
        }
        Some("oct") => {
            if !allow_secret {
                return Err("symmetric keys are only accepted from a jwks_file".into());
            }
            let secret = b64url(need("k")?)?;
            if secret.len() < 32 {
                return Err("HMAC key shorter than 32 bytes".into());
            }
            (DecodingKey::from_secret(&secret), HMAC_ALGS.to_vec())
        }
        other => return Err(format!("unsupported key type {other:?}")),
    })
}

fn jwk_to_key(
    k: &Value,
    allowed: &[Algorithm],
    allow_secret: bool,
) -> Result<Option<VerifyKey>, String> {
    let s = |name: &str| k.get(name).and_then(Value::as_str);
    if s("use").is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(ops) = k.get("key_ops").and_then(Value::as_array) {
        if !ops.iter().any(|o| o.as_str() == Some("verify")) {
            return Ok(None);
        }
    }
    let (key, family) = decoding_key(k, allow_secret)?;
    let mut algorithms: Vec<Algorithm> =
        family.into_iter().filter(|a| allowed.contains(a)).collect();
    if let Some(a) = s("alg") {
        let a = Algorithm::from_str(a).map_err(|_| format!("unsupported alg {a:?}"))?;
        algorithms.retain(|x| *x == a);
    }
    if algorithms.is_empty() {
        return Ok(None);
    }
    check_key(&key, &algorithms)?;
    Ok(Some(VerifyKey {
        kid: s("kid").map(str::to_string),
        key,
        algorithms,
    }))
}

/// Refuse a key the crypto backend cannot use (an EC point off the curve, a bad RSA modulus):
/// building a verifier parses the key without needing a real signature.
fn check_key(key: &DecodingKey, algorithms: &[Algorithm]) -> Result<(), String> {
    for alg in algorithms {
        jsonwebtoken::crypto::verify("AA", b"probe", key, *alg)
            .map_err(|e| format!("unusable key: {e}"))?;
    }
    Ok(())
}

/// A PEM public key (SPKI `PUBLIC KEY`, or `RSA PUBLIC KEY`) as a key for the allowed
/// algorithms of its type.
pub fn pem_key(pem: &[u8], allowed: &[Algorithm]) -> Result<VerifyKey, String> {
    let (key, family) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        (k, RSA_ALGS.to_vec())
    } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        let alg = match k.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => Algorithm::ES256,
            Ok(97) => Algorithm::ES384,
            _ => return Err("unsupported EC curve (P-256 and P-384 are)".into()),
        };
        (k, vec![alg])
    } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        (k, vec![Algorithm::EdDSA])
    } else {
        return Err("not a PEM public key (RSA, EC P-256/P-384 or Ed25519)".into());
    };
    let algorithms: Vec<Algorithm> = family
        .iter()
        .copied()
        .filter(|a| allowed.contains(a))
        .collect();
    if algorithms.is_empty() {
        return Err(format!(
            "the key verifies {} only, none of which is in `algorithms`",
            family
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join("/")
        ));
    }
    check_key(&key, &algorithms)?;
    Ok(VerifyKey {
        kid: None,
        key,
        algorithms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    #[test]
    fn jwks_parsing_skips_unusable_keys() {
        let all: Vec<Algorithm> = RSA_ALGS
            .iter()
            .chain(HMAC_ALGS.iter())
            .copied()
            .chain([Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA])
            .collect();
        let k = crate::authn::jwt::test_keys::keys();
        let with = |mut jwk: Value, extra: Value| {
            for (n, v) in extra.as_object().unwrap() {
                jwk[n] = v.clone();
            }
            jwk
        };
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "small", "n": b64(&[0xff; 128]), "e": "AQAB"},
            with(k.rsa.jwk.clone(), serde_json::json!({"kid": "big", "alg": "RS256"})),
            with(k.rsa.jwk.clone(), serde_json::json!({"kid": "enc", "use": "enc"})),
            with(k.p256.jwk.clone(), serde_json::json!({"kid": "p256"})),
            {"kty": "EC", "kid": "off-curve", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])},
            {"kty": "EC", "kid": "k1", "crv": "secp256k1", "x": b64(&[1; 32]), "y": b64(&[2; 32])},
            with(k.ed.jwk.clone(), serde_json::json!({"kid": "ed"})),
            {"kty": "oct", "kid": "sym", "k": b64(&[4; 32])},
        ]});
        let bytes = serde_json::to_vec(&doc).unwrap();
        let keys = parse_jwks(&bytes, &all, false).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["big", "p256", "ed"]);
        assert_eq!(keys[0].algorithms, [Algorithm::RS256]);
        assert_eq!(keys[1].algorithms, [Algorithm::ES256]);
        let with_oct = parse_jwks(&bytes, &all, true).unwrap();
        assert_eq!(with_oct.len(), 4);
        let only_es: Vec<_> = parse_jwks(&bytes, &[Algorithm::ES256], false).unwrap();
        assert_eq!(only_es.len(), 1);
        assert!(parse_jwks(b"{}", &all, false).is_err());
        assert!(parse_jwks(b"nope", &all, false).is_err());
    }

    #[test]
    fn key_matching_by_kid_and_algorithm() {
        let k = |kid: Option<&str>, algs: Vec<Algorithm>| VerifyKey {
            kid: kid.map(str::to_string),
            key: DecodingKey::from_secret(b"x"),
            algorithms: algs,
        };
        let set = KeySet {
            generation: 1,
            keys: vec![
                k(Some("a"), vec![Algorithm::RS256]),
                k(Some("b"), vec![Algorithm::ES256]),
            ],
        };
        assert!(matches!(set.find(Some("a"), Algorithm::RS256), KeyMatch::Keys(v) if v.len() == 1));
        assert!(matches!(
            set.find(Some("a"), Algorithm::HS256),
            KeyMatch::WrongAlgorithm
        ));
        assert!(matches!(
            set.find(Some("zz"), Algorithm::RS256),
            KeyMatch::UnknownKid
        ));
        assert!(
            matches!(set.find(None, Algorithm::ES256), KeyMatch::Keys(v) if v[0].kid.as_deref() == Some("b"))
        );
        assert!(set.has_kid("a") && !set.has_kid("zz"));
        let unnamed = KeySet {
            generation: 1,
            keys: vec![k(None, vec![Algorithm::HS256])],
        };
        assert!(matches!(
            unnamed.find(Some("whatever"), Algorithm::HS256),
            KeyMatch::Keys(_)
        ));
    }
}
