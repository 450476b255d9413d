//! LangGraph's filter language (docs/semantics.md §4), compiled once and matched without allocation.
//!
//! Accepted: a plain value (equality), `{"$eq": v}`, `{"$contains": v}`, and top-level `$or` /
//! `$and` lists of at least two sub-filters, nested at most two levels. Equality is Python's
//! (`1 == 1.0 == True`), because the in-memory runtime compares with `==`. Anything else is a
//! load error: the in-memory server silently treats unknown operators as a match, which is a
//! fail-open trap we refuse to copy.

use serde_json::{Map, Value};

use crate::policy::template::ValueTemplate;
use crate::user::User;

/// One condition on a top-level metadata key.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond<V> {
    /// `{"k": v}` or `{"k": {"$eq": v}}`: the key exists and equals `v`.
    Eq(String, V),
    /// `{"k": {"$contains": v}}`: the key holds a list containing `v` (or every element of `v`).
    Contains(String, V),
}

/// A filter: conditions ANDed, plus optional `$or` and `$and` groups.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter<V> {
    /// Key conditions, all of which must hold.
    pub conds: Vec<Cond<V>>,
    /// `$or`: at least one must hold.
    pub any: Option<Vec<Filter<V>>>,
    /// `$and`: all must hold.
    pub all: Option<Vec<Filter<V>>>,
}

/// The filter in its JSON form, as a handler writes it: `{"k": v, "k2": {"$contains": v},
/// "$or": [...], "$and": [...]}` (what `explain` shows and the audit log records).
impl<V: serde::Serialize> serde::Serialize for Filter<V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut m = s.serialize_map(None)?;
        for c in &self.conds {
            match c {
                Cond::Eq(k, v) => m.serialize_entry(k, v)?,
                Cond::Contains(k, v) => m.serialize_entry(k, &Contains(v))?,
            }
        }
        if let Some(any) = &self.any {
            m.serialize_entry("$or", any)?;
        }
        if let Some(all) = &self.all {
            m.serialize_entry("$and", all)?;
        }
        m.end()
    }
}

/// `{"$contains": v}`.
struct Contains<'a, V>(&'a V);

impl<V: serde::Serialize> serde::Serialize for Contains<'_, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("$contains", self.0)?;
        m.end()
    }
}

/// A compiled filter whose values may be templates.
pub type FilterTemplate = Filter<ValueTemplate>;
/// A filter rendered for one user.
pub type ResolvedFilter = Filter<Value>;

const MAX_DEPTH: usize = 2;

impl FilterTemplate {
    /// Compile a filter from its JSON (or YAML) form.
    pub fn compile(v: &Value) -> Result<FilterTemplate, String> {
        compile_at(v, 0)
    }

    /// Render the templates for a user.
    pub fn render(&self, user: &User) -> Result<ResolvedFilter, String> {
        let conds = self
            .conds
            .iter()
            .map(|c| {
                Ok(match c {
                    Cond::Eq(k, t) => Cond::Eq(k.clone(), t.render(user)?),
                    Cond::Contains(k, t) => Cond::Contains(k.clone(), t.render(user)?),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let group =
            |g: &Option<Vec<FilterTemplate>>| -> Result<Option<Vec<ResolvedFilter>>, String> {
                g.as_ref()
                    .map(|fs| {
                        fs.iter()
                            .map(|f| f.render(user))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .transpose()
            };
        Ok(Filter {
            conds,
            any: group(&self.any)?,
            all: group(&self.all)?,
        })
    }
}

fn compile_at(v: &Value, depth: usize) -> Result<FilterTemplate, String> {
    let Value::Object(m) = v else {
        return Err("a filter must be an object of metadata keys".into());
    };
    let mut f = Filter {
        conds: Vec::new(),
        any: None,
        all: None,
    };
    for (k, x) in m {
        match k.as_str() {
            "$or" | "$and" => {
                if depth + 1 > MAX_DEPTH {
                    return Err(format!(
                        "{k}: too many nested operators (at most {MAX_DEPTH} levels)"
                    ));
                }
                let Value::Array(items) = x else {
                    return Err(format!("{k} takes a list of filters"));
                };
                if items.len() < 2 {
                    return Err(format!("{k} needs at least 2 filters"));
                }
                let subs = items
                    .iter()
                    .map(|i| compile_at(i, depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                if k == "$or" {
                    f.any = Some(subs);
                } else {
                    f.all = Some(subs);
                }
            }
            key if key.starts_with('$') => {
                return Err(format!(
                    "unknown filter operator {key:?} (supported: $or, $and at the top; \
                     $eq, $contains on a key)"
                ))
            }
            key => f.conds.push(compile_cond(key, x)?),
        }
    }
    Ok(f)
}

fn compile_cond(key: &str, x: &Value) -> Result<Cond<ValueTemplate>, String> {
    match x {
        Value::Object(op) => {
            let mut it = op.iter();
            match (it.next(), it.next()) {
                (Some((name, operand)), None) => {
                    let t = ValueTemplate::compile(operand).map_err(|e| format!("{key}: {e}"))?;
                    match name.as_str() {
                        "$eq" => Ok(Cond::Eq(key.to_string(), t)),
                        "$contains" => Ok(Cond::Contains(key.to_string(), t)),
                        other => Err(format!(
                            "{key}: unknown filter operator {other:?} (supported: $eq, $contains)"
                        )),
                    }
                }
                (None, _) => Err(format!(
                    "{key}: an empty operator object matches nothing useful"
                )),
                (Some(_), Some(_)) => Err(format!(
                    "{key}: an operator object must have exactly one of $eq or $contains \
                     (to compare with an object, use {{\"$eq\": {{...}}}})"
                )),
            }
        }
        v => Ok(Cond::Eq(
            key.to_string(),
            ValueTemplate::compile(v).map_err(|e| format!("{key}: {e}"))?,
        )),
    }
}

/// Python `==` on JSON values: numbers compare by value, and `True == 1`, `False == 0`.
pub fn py_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
        }
        (Value::Number(_) | Value::Bool(_), Value::Number(_) | Value::Bool(_)) => {
            match (as_num(a), as_num(b)) {
                (Some(Num::I(x)), Some(Num::I(y))) => x == y,
                (Some(x), Some(y)) => x.f64() == y.f64(),
                _ => false,
            }
        }
        _ => false,
    }
}

enum Num {
    I(i128),
    F(f64),
}
impl Num {
    fn f64(&self) -> f64 {
        match self {
            Num::I(i) => *i as f64,
            Num::F(f) => *f,
        }
    }
}
fn as_num(v: &Value) -> Option<Num> {
    match v {
        Value::Bool(b) => Some(Num::I(i128::from(*b))),
        Value::Number(n) => n
            .as_i64()
            .map(|i| Num::I(i128::from(i)))
            .or_else(|| n.as_u64().map(|u| Num::I(i128::from(u))))
            .or_else(|| n.as_f64().map(Num::F)),
        _ => None,
    }
}

impl ResolvedFilter {
    /// Whether metadata passes the filter (`_check_filter_match`).
    pub fn matches(&self, metadata: &Map<String, Value>) -> bool {
        if let Some(any) = &self.any {
            if !any.iter().any(|f| f.matches(metadata)) {
                return false;
            }
        }
        if let Some(all) = &self.all {
            if !all.iter().all(|f| f.matches(metadata)) {
                return false;
            }
        }
        self.conds.iter().all(|c| match c {
            Cond::Eq(k, v) => metadata.get(k).is_some_and(|m| py_eq(m, v)),
            Cond::Contains(k, v) => match metadata.get(k) {
                Some(Value::Array(items)) => match v {
                    Value::Array(wanted) => {
                        wanted.iter().all(|w| items.iter().any(|i| py_eq(i, w)))
                    }
                    w => items.iter().any(|i| py_eq(i, w)),
                },
                _ => false,
            },
        })
    }

    /// Whether the filter is empty (matches everything).
    pub fn is_empty(&self) -> bool {
        self.conds.is_empty() && self.any.is_none() && self.all.is_none()
    }

    /// Split into what an upstream metadata-containment search can express exactly (top-level
    /// equalities on scalars, written over the client's own keys) and the rest, which must be
    /// checked on each returned item.
    pub fn split_pushable(&self) -> (Vec<(&str, &Value)>, Option<ResolvedFilter>) {
        let mut push: Vec<(&str, &Value)> = Vec::with_capacity(self.conds.len());
        let mut rest_conds = Vec::new();
        for c in &self.conds {
            match c {
                Cond::Eq(k, v) if is_scalar(v) && !push.iter().any(|(p, _)| p == k) => {
                    push.push((k.as_str(), v));
                }
                other => rest_conds.push(other.clone()),
            }
        }
        // `$or` and `$and` always stay: the upstream's containment cannot express them.
        let rest = Filter {
            conds: rest_conds,
            any: self.any.clone(),
            all: self.all.clone(),
        };
        (push, (!rest.is_empty()).then_some(rest))
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(v: Value) -> ResolvedFilter {
        FilterTemplate::compile(&v)
            .unwrap()
            .render(&User::default())
            .unwrap()
    }
    fn md(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert!(f(json!({})).matches(&md(json!({}))));
    }

    #[test]
    fn plain_value_requires_key_and_equality() {
        let flt = f(json!({"owner": "alice"}));
        assert!(flt.matches(&md(json!({"owner": "alice", "x": 1}))));
        assert!(!flt.matches(&md(json!({"owner": "bob"}))));
        assert!(!flt.matches(&md(json!({}))));
    }

    #[test]
    fn python_equality_treats_true_as_one() {
        assert!(f(json!({"n": true})).matches(&md(json!({"n": 1}))));
        assert!(f(json!({"n": 1})).matches(&md(json!({"n": 1.0}))));
        assert!(!f(json!({"n": "1"})).matches(&md(json!({"n": 1}))));
    }

    #[test]
    fn lists_compare_in_order() {
        assert!(!f(json!({"t": ["a", "b"]})).matches(&md(json!({"t": ["b", "a"]}))));
        assert!(f(json!({"t": ["a", "b"]})).matches(&md(json!({"t": ["a", "b"]}))));
    }

    #[test]
    fn null_matches_only_present_null() {
        let flt = f(json!({"k": null}));
        assert!(flt.matches(&md(json!({"k": null}))));
        assert!(!flt.matches(&md(json!({}))));
    }

    #[test]
    fn eq_operator_is_equality() {
        assert!(f(json!({"owner": {"$eq": "a"}})).matches(&md(json!({"owner": "a"}))));
        assert!(!f(json!({"owner": {"$eq": "a"}})).matches(&md(json!({"owner": "b"}))));
    }

    #[test]
    fn contains_scalar_tests_membership_in_a_list() {
        let flt = f(json!({"p": {"$contains": "a"}}));
        assert!(flt.matches(&md(json!({"p": ["a", "b"]}))));
        assert!(!flt.matches(&md(json!({"p": ["b"]}))));
        assert!(
            !flt.matches(&md(json!({"p": "a"}))),
            "a string never matches $contains"
        );
        assert!(!flt.matches(&md(json!({}))));
    }

    #[test]
    fn contains_list_tests_subset() {
        let flt = f(json!({"p": {"$contains": ["a", "c"]}}));
        assert!(flt.matches(&md(json!({"p": ["c", "b", "a"]}))));
        assert!(!flt.matches(&md(json!({"p": ["a"]}))));
        assert!(f(json!({"p": {"$contains": []}})).matches(&md(json!({"p": []}))));
    }

    #[test]
    fn or_needs_one_and_needs_all() {
        let or = f(json!({"$or": [{"owner": "alice"}, {"owner": "bob"}]}));
        assert!(or.matches(&md(json!({"owner": "bob"}))));
        assert!(!or.matches(&md(json!({"owner": "carol"}))));
        let and = f(json!({"$and": [{"a": 1}, {"b": 2}]}));
        assert!(and.matches(&md(json!({"a": 1, "b": 2}))));
        assert!(!and.matches(&md(json!({"a": 1}))));
    }

    #[test]
    fn combinator_is_anded_with_sibling_keys() {
        let flt = f(json!({"$or": [{"a": 1}, {"b": 1}], "org": "x"}));
        assert!(flt.matches(&md(json!({"a": 1, "org": "x"}))));
        assert!(!flt.matches(&md(json!({"a": 1, "org": "y"}))));
    }

    #[test]
    fn two_levels_of_nesting_are_accepted_and_three_rejected() {
        assert!(FilterTemplate::compile(
            &json!({"$or": [{"$or": [{"a": 1}, {"b": 1}]}, {"c": 1}]})
        )
        .is_ok());
        let three = json!({"$or": [{"$or": [{"$or": [{"a":1},{"b":1}]}, {"b": 1}]}, {"c": 1}]});
        assert!(FilterTemplate::compile(&three)
            .unwrap_err()
            .contains("too many nested"));
    }

    #[test]
    fn combinator_with_fewer_than_two_filters_is_rejected() {
        assert!(FilterTemplate::compile(&json!({"$or": [{"a": 1}]})).is_err());
        assert!(FilterTemplate::compile(&json!({"$and": {"a": 1}})).is_err());
    }

    #[test]
    fn unknown_operators_are_load_errors_not_matches() {
        for bad in [
            json!({"owner": {"$ne": "zzz"}}),
            json!({"owner": {"$in": ["a"]}}),
            json!({"$nor": [{"a": 1}, {"b": 1}]}),
            json!({"owner": {}}),
            json!({"owner": {"x": 2}}),
            json!({"owner": {"$eq": 1, "$contains": 1}}),
        ] {
            assert!(FilterTemplate::compile(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dotted_keys_are_literal() {
        let flt = f(json!({"a.b": 1}));
        assert!(flt.matches(&md(json!({"a.b": 1}))));
        assert!(!flt.matches(&md(json!({"a": {"b": 1}}))));
    }

    #[test]
    fn templates_render_per_user() {
        let t = FilterTemplate::compile(&json!({"p": {"$contains": "{user.identity}"}})).unwrap();
        let u = User {
            identity: "dave".into(),
            ..User::default()
        };
        assert!(t.render(&u).unwrap().matches(&md(json!({"p": ["dave"]}))));
    }

    #[test]
    fn scalar_equalities_push_down_and_the_rest_stays() {
        let flt = f(json!({"owner": "a", "tags": ["x"], "p": {"$contains": "a"}}));
        let (push, rest) = flt.split_pushable();
        assert_eq!(push, [("owner", &json!("a"))]);
        let rest = rest.unwrap();
        assert_eq!(rest.conds.len(), 2);
        let flt = f(json!({"owner": {"$eq": "a"}}));
        let (push, rest) = flt.split_pushable();
        assert_eq!(push, [("owner", &json!("a"))]);
        assert!(rest.is_none());
    }
}
