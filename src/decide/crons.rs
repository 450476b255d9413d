//! Crons (semantics §5.5): create, by-id operations, search and count.

use super::*;

impl<'a> Cx<'a> {
    pub(super) fn cron_create(&mut self, on_thread: bool) -> Decided<Forward> {
        self.on(Subject::CreateBody);
        let g = self.grant(CRONS, Action::Create)?;
        self.on(Subject::None);
        if let Some(aid) = self.str_field("assistant_id")? {
            let miss = GatewayError::not_found(format!("Assistant '{aid}' not found"));
            self.assistant_read_check(&aid, miss)?;
        }
        let f = self.stamped(&g, false)?;
        if on_thread {
            let tid = self.param(&self.input.route.params.thread_id)?;
            self.on(Subject::Target(Target::Thread(tid.clone())));
            let read = self.grant(THREADS, Action::Read)?;
            self.check(
                &read,
                Target::Thread(tid.clone()),
                Miss::ThreadWithIdVerbose,
                &tid,
            )?;
        }
        Ok(f)
    }

    pub(super) fn cron_search(&mut self, count: bool) -> Decided<Outcome> {
        self.on(Subject::PerItem);
        let g = self.grant(CRONS, Action::Search)?;
        self.on(Subject::None);
        let tid = self.str_field("thread_id")?;
        let thread_filter = match &tid {
            Some(tid) => {
                self.on(Subject::Target(Target::Thread(tid.clone())));
                let read = self.grant(THREADS, Action::Read)?;
                if read.active_filter().is_some() {
                    let visible = match self.fact(Target::Thread(tid.clone()))? {
                        Some(v) => read
                            .active_filter()
                            .is_some_and(|f| f.matches(metadata_ref(&v))),
                        None => false,
                    };
                    if !visible {
                        return Ok(Outcome::Reply(empty_search(count)));
                    }
                }
                None
            }
            None => self
                .grant(THREADS, Action::Search)?
                .active_filter()
                .cloned(),
        };
        Ok(Outcome::Forward(self.search_forward(
            &g,
            "/runs/crons/search",
            count,
            thread_filter,
        )?))
    }

    /// A by-id cron operation: the filter gates existence; `stamp`: metadata is stamped when
    /// the body carries some.
    pub(super) fn cron_by_id(&mut self, miss: Miss, stamp: bool) -> Decided<Forward> {
        let p = &self.input.route.params;
        let cid = self.param(&p.cron_id)?;
        self.on(Subject::Target(Target::Cron(cid.clone())));
        let action = self
            .input
            .route
            .route
            .events
            .first()
            .map(|e| e.action)
            .unwrap_or(Action::Read);
        let g = self.grant(CRONS, action)?;
        self.check(&g, Target::Cron(cid.clone()), miss, &cid)?;
        let stamp = stamp
            && self
                .obj()
                .map(|o| o.get_raw("metadata").is_some())
                .unwrap_or(false);
        let mut f = if stamp {
            self.stamped(&g, false)?
        } else {
            forward()
        };
        if action != Action::Read {
            f.invalidate.push(Target::Cron(cid));
        }
        Ok(f)
    }
}
