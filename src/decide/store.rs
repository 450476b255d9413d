//! The store (semantics §5.6, §6): namespaces under the handler's rule, labels validated first.

use super::*;

impl<'a> Cx<'a> {
    pub(super) fn store(&mut self, op: Op) -> Decided<Forward> {
        let (action, field) = match op {
            Op::StorePut => (Action::Put, "namespace"),
            Op::StoreGet => (Action::Get, "namespace"),
            Op::StoreDelete => (Action::Delete, "namespace"),
            Op::StoreSearch => (Action::Search, "namespace_prefix"),
            _ => (Action::ListNamespaces, "prefix"),
        };
        let mut f = forward();
        // The namespace, from the query (get) or the body.
        let ns: Option<Vec<String>> = if op == Op::StoreGet {
            let q = StoreQuery::parse(self.input.query)?;
            q.namespace
                .map(|n| n.split('.').map(String::from).collect())
        } else {
            match self.obj()?.get::<Value>(field).map_err(body_error)? {
                None | Some(Value::Null) => None,
                Some(Value::Array(items)) => Some(
                    items
                        .into_iter()
                        .map(|i| match i {
                            Value::String(s) => Ok(s),
                            _ => Err(GatewayError::unprocessable(format!(
                                "{field} labels must be strings"
                            ))),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                Some(_) => {
                    return Err(GatewayError::unprocessable(format!(
                        "{field} must be a list of strings"
                    ))
                    .into())
                }
            }
        };
        if let Some(ns) = &ns {
            if let Some(bad) = ns.iter().find(|l| l.is_empty() || l.contains('.')) {
                return Err(GatewayError::unprocessable(format!(
                    "Namespace label '{bad}' must be a non-empty string without periods"
                ))
                .into());
            }
        }
        // Labels are validated before the handler runs (semantics §6).
        self.on(Subject::Deferred);
        let g = self.grant(STORE, action)?;
        if let Some((prefix, mode, message)) = &g.namespace {
            let current = ns.clone().unwrap_or_default();
            let has_prefix =
                current.len() >= prefix.len() && current.iter().zip(prefix).all(|(a, b)| a == b);
            let new_ns = match mode {
                NamespaceMode::Require if has_prefix => None,
                NamespaceMode::Require => {
                    return Err(GatewayError::forbidden(message.clone()).into())
                }
                NamespaceMode::Rewrite if has_prefix => None,
                NamespaceMode::Rewrite => {
                    Some(prefix.iter().cloned().chain(current).collect::<Vec<_>>())
                }
            };
            if let Some(new_ns) = new_ns {
                if op == Op::StoreGet {
                    f.query = Some(StoreQuery::rewrite(self.input.query, &new_ns.join(".")));
                } else {
                    let raw = serde_json::to_vec(&new_ns)
                        .map_err(|e| GatewayError::internal(e.to_string()))?;
                    f.body = Some(self.obj()?.splice(&[(field, Some(&raw))]).into());
                }
            }
        }
        // Access policies read the item at its final namespace.
        let event = Event::new(STORE, action);
        let final_ns = match (&g.namespace, &ns) {
            (Some((prefix, NamespaceMode::Rewrite, _)), cur) => {
                let cur = cur.clone().unwrap_or_default();
                if cur.len() >= prefix.len() && cur.iter().zip(prefix).all(|(a, b)| a == b) {
                    cur
                } else {
                    prefix.iter().cloned().chain(cur).collect()
                }
            }
            (_, cur) => cur.clone().unwrap_or_default(),
        };
        match op {
            Op::StorePut => {
                let value = match self.obj()?.get::<Value>("value").map_err(body_error)? {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                self.on(Subject::Tags(value));
            }
            Op::StoreGet | Op::StoreDelete => {
                let key = if op == Op::StoreGet {
                    StoreQuery::parse(self.input.query)?.key
                } else {
                    self.str_field("key")?
                };
                match key {
                    Some(k) => self.on(Subject::Target(Target::StoreItem(final_ns.join("."), k))),
                    None => self.on(Subject::None),
                }
            }
            Op::StoreSearch => self.on(Subject::PerItem),
            _ => self.on(Subject::None),
        }
        if let Err(e) = self.check_access(event) {
            if let (Stop::Refuse(_), Some(last)) = (&e, self.steps.last_mut()) {
                last.allowed = false;
            }
            return Err(e);
        }
        if op == Op::StoreSearch && !self.per_item.is_empty() {
            f.response = ResponsePlan::StoreItems {
                filter: None,
                access: self.per_item.clone(),
            };
        }
        if op == Op::StoreSearch {
            if let Some(filter) = g.active_filter() {
                let (push, rest) = filter.split_pushable();
                let o = self.obj()?;
                let mut edited: Option<Vec<u8>> = None;
                if !push.is_empty() {
                    let merged = merge_object_pairs(o.get_raw("filter"), push.iter().copied())
                        .map_err(|e| match e {
                            BodyError::NotAnObject => {
                                GatewayError::unprocessable("filter must be an object")
                            }
                            other => body_error(other),
                        })?;
                    // Apply on top of a namespace rewrite if there was one.
                    edited = Some(match &f.body {
                        Some(b) => {
                            let b = b.bytes(o.source());
                            let reparsed =
                                ObjectBody::parse(&b, MAX_JSON_DEPTH).map_err(body_error)?;
                            reparsed.splice(&[("filter", Some(&merged))])
                        }
                        None => o.splice(&[("filter", Some(&merged))]),
                    });
                }
                if let Some(e) = edited {
                    f.body = Some(e.into());
                }
                if let Some(rest) = rest {
                    f.response = ResponsePlan::StoreItems {
                        filter: Some(rest),
                        access: self.per_item.clone(),
                    };
                }
            }
        }
        Ok(f)
    }
}
