//! Thread, assistant and cron search and count (semantics §4.3, §9): stamped metadata narrows the body's filter, or the gateway completes the search.

use super::*;

impl<'a> Cx<'a> {
    /// Thread, assistant and cron search and count (semantics §4.3 and §9): stamped metadata
    /// and scalar equalities are written over the client's own `metadata`; the rest is
    /// evaluated on the results by the proxy.
    pub(super) fn search(
        &mut self,
        res: Resource,
        path: &'static str,
        count: bool,
        thread_filter: Option<ResolvedFilter>,
    ) -> Decided<Outcome> {
        self.on(Subject::PerItem);
        let g = self.grant(res, Action::Search)?;
        Ok(Outcome::Forward(self.search_forward(
            &g,
            path,
            count,
            thread_filter,
        )?))
    }

    pub(super) fn search_forward(
        &self,
        g: &Grant,
        path: &'static str,
        count: bool,
        thread_filter: Option<ResolvedFilter>,
    ) -> Decided<Forward> {
        let o = self.obj()?;
        // The stamped metadata, then the filter's equalities (a later value for a key wins).
        let mut set: Vec<(&str, &Value)> = Vec::with_capacity(
            g.metadata.as_ref().map_or(0, Map::len)
                + g.filter.as_ref().map_or(0, |f| f.conds.len()),
        );
        set.extend(g.metadata.iter().flat_map(pairs));
        let mut residual = None;
        if let Some(filter) = g.active_filter() {
            let (push, rest) = filter.split_pushable();
            set.extend(push);
            residual = rest;
        }
        let mut f = forward();
        if !set.is_empty() {
            let merged = o.merge_metadata(set.iter().copied()).map_err(|e| match e {
                BodyError::NotAnObject => GatewayError::unprocessable("metadata must be an object"),
                other => body_error(other),
            })?;
            f.body = Some(o.splice(&[("metadata", Some(&merged))]).into());
        }
        if residual.is_some() || thread_filter.is_some() || !self.per_item.is_empty() {
            if o.get_raw("select").is_some() {
                return Err(GatewayError::bad_request(
                    "select cannot be combined with a filter graphguard evaluates on results",
                )
                .into());
            }
            let num = |k: &str, d: u64| -> Decided<u64> {
                match o.get::<Value>(k).map_err(body_error)? {
                    None | Some(Value::Null) => Ok(d),
                    Some(v) => v.as_u64().ok_or_else(|| {
                        Stop::Refuse(GatewayError::unprocessable(format!(
                            "{k} must be a non-negative integer"
                        )))
                    }),
                }
            };
            f.response = ResponsePlan::Search(SearchPlan {
                path,
                count,
                filter: residual,
                thread_filter,
                limit: num("limit", 10)?,
                offset: num("offset", 0)?,
                access: self.per_item.clone(),
            });
        }
        Ok(f)
    }
}
