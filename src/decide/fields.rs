//! The body's fields against the route's inventory (routes::fields): ids canonical, assistants resolvable, webhooks allowed, identity keys scrubbed from configuration objects.

use super::*;
use crate::routes::fields::{Field, Of};

impl<'a> Cx<'a> {
    /// Every top-level field of the body must be in the route's inventory
    /// ([`crate::routes::fields`]); each one present is checked for its kind: ids canonical,
    /// assistants resolvable, webhooks allowed, identity keys removed from configuration
    /// objects (the edits are kept for the forward).
    pub(super) fn check_fields(&mut self) -> Decided<()> {
        match (self.input.body, self.input.route.route.body) {
            (Body::Object(o), BodyKind::Object(shape)) => {
                self.edits = self.vet(o, shape)?;
            }
            (Body::Array(items), BodyKind::Array(shape)) => {
                let mut all = Vec::with_capacity(items.len());
                for item in items {
                    all.push(self.vet(item, shape)?);
                }
                self.item_edits = all;
            }
            _ => {}
        }
        Ok(())
    }

    /// [`Cx::check_fields`] for one object of a shape.
    pub(super) fn vet(&self, o: &ObjectBody<'_>, shape: &'static Shape) -> Decided<Vec<Edit>> {
        let mut edits = Vec::new();
        for (key, raw) in o.members() {
            let Some(field) = shape.field(key) else {
                return Err(GatewayError::unprocessable(format!(
                    "Unknown field {key:?} in {}: graphguard forwards only the fields the agent \
                     server's schema names",
                    shape.name
                ))
                .into());
            };
            if let Some(edited) = self.vet_field(field, raw)? {
                edits.push((field.name, edited));
            }
        }
        Ok(edits)
    }

    /// One field present in the body, checked for its kind; its new raw value if it is
    /// edited (identity keys scrubbed from configuration objects).
    fn vet_field(&self, field: &Field, raw: &[u8]) -> Decided<Option<Vec<u8>>> {
        let v = || -> Decided<Value> {
            serde_json::from_slice(raw).map_err(|_| body_error(BodyError::NotAnObject).into())
        };
        match field.kind {
            Kind::Plain | Kind::Metadata | Kind::Route => {}
            Kind::Id(of) => match v()? {
                Value::Null => {}
                Value::String(id) => canonical_id(of, &id).map(drop)?,
                _ => return Err(must_be(field.name, "a string")),
            },
            Kind::Ids(of) => match v()? {
                Value::Null => {}
                Value::Array(items) => canonical_ids(of, field.name, &items)?,
                _ => return Err(must_be(field.name, "a list of strings")),
            },
            Kind::Assistant => match v()? {
                Value::Null => {}
                Value::String(a) => assistant_ref(&a).map(drop)?,
                _ => return Err(must_be(field.name, "a string")),
            },
            Kind::Config => return self.scrub_config(raw),
            Kind::Context | Kind::Checkpoint => return self.scrub(raw),
            Kind::Webhook => match v()? {
                Value::Null => {}
                Value::String(url) => self.check_webhook(&url)?,
                _ => return Err(must_be(field.name, "a string")),
            },
        }
        Ok(None)
    }

    /// A run configuration with identity keys removed from its `configurable`, if any were.
    pub(super) fn scrub_config(&self, raw: &[u8]) -> Decided<Option<Vec<u8>>> {
        if raw.first() != Some(&b'{') {
            return Ok(None);
        }
        let config = ObjectBody::parse(raw, MAX_JSON_DEPTH).map_err(body_error)?;
        let Some(inner) = config.get_raw("configurable") else {
            return Ok(None);
        };
        Ok(self
            .scrub(inner)?
            .map(|c| config.splice(&[("configurable", Some(&c))])))
    }

    /// A JSON object with identity keys removed, if it had any: the names of the headers that
    /// carry the user (whatever `settings.user_headers` calls them, in any case, and anything
    /// under `x-graphguard-`), and LangGraph's reserved keys. A run fired by a cron has no
    /// request headers, so a client's copy would be all its graph sees.
    pub(super) fn scrub(&self, raw: &[u8]) -> Decided<Option<Vec<u8>>> {
        if raw.first() != Some(&b'{') {
            return Ok(None);
        }
        let o = ObjectBody::parse(raw, MAX_JSON_DEPTH).map_err(body_error)?;
        let doomed: Vec<(&str, Option<&[u8]>)> = o
            .keys()
            .filter(|k| self.is_identity_key(k))
            .map(|k| (k, None))
            .collect();
        Ok((!doomed.is_empty()).then(|| o.splice(&doomed)))
    }

    pub(super) fn is_identity_key(&self, key: &str) -> bool {
        let lower = key.to_ascii_lowercase();
        lower.starts_with("x-graphguard-")
            || self
                .policy
                .user_headers
                .strip
                .iter()
                .any(|h| h.as_str() == lower)
            || RESERVED_CONFIGURABLE_KEYS.contains(&key)
    }

    /// A webhook URL the server would call: refused (403) unless `settings.webhooks` allows it.
    pub(super) fn check_webhook(&self, url: &str) -> Decided<()> {
        let refuse = |why: String| -> Stop { GatewayError::forbidden(why).into() };
        match self.policy.webhooks.check(url).map_err(refuse)? {
            Verdict::Allowed => Ok(()),
            Verdict::IfPublic(host) => {
                let addrs: Vec<std::net::IpAddr> = self
                    .fact(Target::Host(host.clone()))?
                    .as_deref()
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
                    .unwrap_or_default();
                if addrs.is_empty() {
                    return Err(refuse(format!("webhook host {host} does not resolve")));
                }
                if !webhook::all_public(&addrs) {
                    return Err(refuse(format!(
                        "webhook host {host} resolves to an address that is not public"
                    )));
                }
                Ok(())
            }
        }
    }

    /// The body with `op`'s edits and the field edits of [`Cx::check_fields`].
    pub(super) fn body_with(&self, op: &[(&str, Option<&[u8]>)]) -> Decided<NewBody> {
        let o = self.obj()?;
        if self.edits.is_empty() {
            return Ok(o.splice_body(op));
        }
        let mut all: Vec<(&str, Option<&[u8]>)> = self
            .edits
            .iter()
            .map(|(k, v)| (*k, Some(v.as_slice())))
            .collect();
        all.extend_from_slice(op);
        Ok(o.splice_body(&all))
    }
}

/// A list of ids, each canonical.
fn canonical_ids(of: Of, name: &str, items: &[Value]) -> Decided<()> {
    for item in items {
        match item {
            Value::String(id) => canonical_id(of, id).map(drop)?,
            _ => return Err(must_be(name, "a list of strings")),
        }
    }
    Ok(())
}
