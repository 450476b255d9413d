//! The id reader against its oracle: Python's own `uuid.UUID`, the function the agent server
//! parses ids with. A Python script generates spellings of UUIDs (every transformation
//! `uuid.UUID` tolerates, and near misses of each) and prints what Python makes of them; the
//! gateway must agree on every one. Needs `python3` (3.11, the agent server's version) on PATH,
//! or `GRAPHGUARD_PYTHON`.
#![allow(clippy::panic, clippy::expect_used)]

use std::process::Command;

const GENERATOR: &str = r#"
import json, random, sys, uuid, unicodedata
rng = random.Random(int(sys.argv[1]))
spaces = [c for c in map(chr, range(0x3100)) if c.isspace()] + ["\u3000"]
digits = {d: [chr(c) for c in range(0x110000) if unicodedata.decimal(chr(c), None) == d] for d in range(10)}
junk = list("{}-_:+xXuUrRnNiIdD0 \t") + ["urn:", "uuid:", "urn:uuid:", "0x", "\u00a0", "\uff21", "\u2212", "\u0660"]

def mutate(s):
    op = rng.randrange(13)
    i = rng.randrange(len(s) + 1)
    if op == 0: return "{" * rng.randint(1, 2) + s + "}" * rng.randint(0, 2)
    if op == 1: return rng.choice(["urn:uuid:", "uuid:", "urn:", "URN:uuid:"]) + s
    if op == 2: return s[:i] + "-" + s[i:]
    if op == 3: return s.replace("-", "", rng.randint(1, 4))
    if op == 4: return "".join(c.upper() if rng.random() < 0.5 else c for c in s)
    if op == 5: return rng.choice(spaces) + s if rng.random() < 0.5 else s + rng.choice(spaces)
    if op == 6: return rng.choice(["+", "0x", "0X", "0x_", "+0x", "-"]) + s
    if op == 7: return s[:i] + "_" + s[i:]
    if op == 8:
        pos = [k for k, c in enumerate(s) if c.isdigit() and c.isascii()]
        if not pos: return s
        k = rng.choice(pos)
        return s[:k] + rng.choice(digits[int(s[k])]) + s[k + 1:]
    if op == 9: return s[:i] + rng.choice(junk) + s[i:]
    if op == 10: return s[:i] + s[i + 1:]
    if op == 11: return s[:i] + rng.choice(["urn:", "uuid:"]) + s[i:]
    return s[1:] if rng.random() < 0.5 else s[:-1]

out = []
for n in range(int(sys.argv[2])):
    u = uuid.UUID(int=rng.getrandbits(128))
    s = rng.choice([str(u), u.hex, str(u).upper(), "{%s}" % u])
    for _ in range(rng.randint(0, 4)):
        s = mutate(s)
    try:
        verdict = str(uuid.UUID(s))
    except ValueError:
        verdict = None
    out.append([s, verdict])
json.dump(out, sys.stdout)
"#;

fn python() -> String {
    std::env::var("GRAPHGUARD_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn oracle(seed: u64, n: usize) -> Vec<(String, Option<String>)> {
    let out = Command::new(python())
        .args(["-c", GENERATOR, &seed.to_string(), &n.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("the id oracle needs {} on PATH: {e}", python()));
    assert!(
        out.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("oracle output")
}

#[test]
fn id_reader_agrees_with_python_uuid_on_generated_spellings() {
    let cases = oracle(20261204, 60_000);
    let (mut accepted, mut variants) = (0, 0);
    for (s, verdict) in &cases {
        let ours = graphguard::ids::py_uuid(s).map(|u| u.to_string());
        assert_eq!(&ours, verdict, "uuid.UUID({s:?})");
        match graphguard::ids::read(s) {
            graphguard::ids::IdForm::Canonical(u) => {
                assert_eq!(Some(s.as_str()), verdict.as_deref(), "{s:?} is canonical");
                assert_eq!(u.to_string(), *s);
            }
            graphguard::ids::IdForm::Variant(u) => {
                assert_ne!(Some(s.as_str()), verdict.as_deref(), "{s:?} is a variant");
                assert_eq!(Some(u.to_string()), *verdict);
                variants += 1;
            }
            graphguard::ids::IdForm::NotUuid => assert_eq!(verdict, &None, "{s:?}"),
        }
        accepted += usize::from(verdict.is_some());
    }
    // The generator must exercise both sides of the boundary, and many variants.
    assert!(
        accepted > 15_000 && accepted < 50_000,
        "{accepted} accepted"
    );
    assert!(variants > 10_000, "{variants} variants");
}
