//! The store (semantics §5.6, §6): namespaces under the handler's rule, labels validated first.

use super::*;

/// The store event and the field naming the namespace, per store route.
fn store_action(op: Op) -> (Action, &'static str) {
    match op {
        Op::StorePut => (Action::Put, "namespace"),
        Op::StoreGet => (Action::Get, "namespace"),
        Op::StoreDelete => (Action::Delete, "namespace"),
        Op::StoreSearch => (Action::Search, "namespace_prefix"),
        _ => (Action::ListNamespaces, "prefix"),
    }
}

/// Whether `ns` starts with `prefix`.
fn has_prefix(ns: &[String], prefix: &[String]) -> bool {
    ns.len() >= prefix.len() && ns.iter().zip(prefix).all(|(a, b)| a == b)
}

/// The namespace the item ends up at: under the prefix when the rule rewrites.
fn final_namespace(g: &Grant, ns: &Option<Vec<String>>) -> Vec<String> {
    let cur = ns.clone().unwrap_or_default();
    match &g.namespace {
        Some((prefix, NamespaceMode::Rewrite, _)) if !has_prefix(&cur, prefix) => {
            prefix.iter().cloned().chain(cur).collect()
        }
        _ => cur,
    }
}

impl<'a> Cx<'a> {
    /// A store route: the namespace read and its labels validated, the handler's namespace
    /// rule applied, access policies on the item at its final namespace, a search's filter
    /// pushed into the body or kept for the results.
    pub(super) fn store(&mut self, op: Op) -> Decided<Forward> {
        let (action, field) = store_action(op);
        let mut f = forward();
        let ns = self.store_namespace(op, field)?;
        // Labels are validated before the handler runs (semantics §6).
        self.on(Subject::Deferred);
        let g = self.grant(STORE, action)?;
        self.apply_namespace_rule(op, field, &g, &ns, &mut f)?;
        // Access policies read the item at its final namespace.
        let event = Event::new(STORE, action);
        let final_ns = final_namespace(&g, &ns);
        self.store_subject(op, &final_ns)?;
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
                self.push_search_filter(filter, &mut f)?;
            }
        }
        Ok(f)
    }

    /// The namespace, from the query (get) or the body, its labels non-empty strings
    /// without periods.
    fn store_namespace(&self, op: Op, field: &str) -> Decided<Option<Vec<String>>> {
        let ns: Option<Vec<String>> = if op == Op::StoreGet {
            let q = StoreQuery::parse(self.input.query)?;
            q.namespace
                .map(|n| n.split('.').map(String::from).collect())
        } else {
            match self.obj()?.get::<Value>(field).map_err(body_error)? {
                None | Some(Value::Null) => None,
                Some(Value::Array(items)) => Some(string_labels(items, field)?),
                Some(_) => {
                    return Err(GatewayError::unprocessable(format!(
                        "{field} must be a list of strings"
                    ))
                    .into())
                }
            }
        };
        if let Some(bad) = ns
            .iter()
            .flatten()
            .find(|l| l.is_empty() || l.contains('.'))
        {
            return Err(GatewayError::unprocessable(format!(
                "Namespace label '{bad}' must be a non-empty string without periods"
            ))
            .into());
        }
        Ok(ns)
    }

    /// The handler's namespace rule: require the prefix (403), or rewrite the namespace
    /// under it (in the query for a get, in the body otherwise).
    fn apply_namespace_rule(
        &self,
        op: Op,
        field: &str,
        g: &Grant,
        ns: &Option<Vec<String>>,
        f: &mut Forward,
    ) -> Decided<()> {
        let Some((prefix, mode, message)) = &g.namespace else {
            return Ok(());
        };
        let current = ns.clone().unwrap_or_default();
        if has_prefix(&current, prefix) {
            return Ok(());
        }
        if *mode == NamespaceMode::Require {
            return Err(GatewayError::forbidden(message.clone()).into());
        }
        let new_ns: Vec<String> = prefix.iter().cloned().chain(current).collect();
        if op == Op::StoreGet {
            f.query = Some(StoreQuery::rewrite(self.input.query, &new_ns.join(".")));
        } else {
            let raw =
                serde_json::to_vec(&new_ns).map_err(|e| GatewayError::internal(e.to_string()))?;
            f.body = Some(self.obj()?.splice(&[(field, Some(&raw))]).into());
        }
        Ok(())
    }

    /// What access policies read tags from: the put's value, the item by key, or each
    /// search result.
    fn store_subject(&mut self, op: Op, final_ns: &[String]) -> Decided<()> {
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
        Ok(())
    }

    /// A store search's filter: equalities merged into the body's `filter` (on top of a
    /// namespace rewrite), the rest evaluated on the results.
    fn push_search_filter(&self, filter: &ResolvedFilter, f: &mut Forward) -> Decided<()> {
        let (push, rest) = filter.split_pushable();
        let o = self.obj()?;
        if !push.is_empty() {
            let merged = merge_object_pairs(o.get_raw("filter"), push.iter().copied()).map_err(
                |e| match e {
                    BodyError::NotAnObject => {
                        GatewayError::unprocessable("filter must be an object")
                    }
                    other => body_error(other),
                },
            )?;
            // Apply on top of a namespace rewrite if there was one.
            let edited = match &f.body {
                Some(b) => {
                    let b = b.bytes(o.source());
                    let reparsed = ObjectBody::parse(&b, MAX_JSON_DEPTH).map_err(body_error)?;
                    reparsed.splice(&[("filter", Some(&merged))])
                }
                None => o.splice(&[("filter", Some(&merged))]),
            };
            f.body = Some(edited.into());
        }
        if let Some(rest) = rest {
            f.response = ResponsePlan::StoreItems {
                filter: Some(rest),
                access: self.per_item.clone(),
            };
        }
        Ok(())
    }
}

/// Namespace labels: every item a string.
fn string_labels(items: Vec<Value>, field: &str) -> Result<Vec<String>, GatewayError> {
    items
        .into_iter()
        .map(|i| match i {
            Value::String(s) => Ok(s),
            _ => Err(GatewayError::unprocessable(format!(
                "{field} labels must be strings"
            ))),
        })
        .collect()
}
