//! The shadow policy: evaluated on the same request and facts as the enforced one, its disagreements logged and counted, never enforced.

use super::*;

impl Gateway {
    /// Evaluate the shadow policy on the same request and facts (looking up only what the
    /// enforced decision did not already fetch); log and count any disagreement.
    pub(super) async fn shadow_compare(
        &self,
        shadow: &Policy,
        enforced: &Policy,
        user: &User,
        input: &Input<'_>,
        mut facts: Facts,
        decision: &Decision,
    ) {
        let shadowed = loop {
            match decide::decide(shadow, user, input, &facts) {
                Next::Done(d) => break d,
                Next::Need(t) => match self.upstream.lookup(&t).await {
                    Ok(f) => facts.insert(t, f),
                    Err(e) => {
                        tracing::warn!(error = %e, "shadow evaluation could not look up a resource");
                        return;
                    }
                },
            }
        };
        // A splice's pieces refer to the request body.
        let original: &[u8] = match input.body {
            decide::Body::Object(o) => o.source(),
            _ => &[],
        };
        let summary = |d: &Decision| -> String {
            match &d.outcome {
                Outcome::Forward(f) => format!(
                    "allow body={} query={} plan={:?}",
                    f.body
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(&b.bytes(original)).into_owned())
                        .unwrap_or_default(),
                    f.query.as_deref().unwrap_or(""),
                    f.response
                ),
                Outcome::Reply(r) => format!("reply {}", r.status.as_u16()),
                Outcome::Refuse(e) => format!("deny {} {}", e.status.as_u16(), e.detail),
            }
        };
        let (live, cand) = (summary(decision), summary(&shadowed));
        if live != cand {
            self.metrics.shadow_disagreements.inc();
            tracing::warn!(
                target: "graphguard::shadow",
                user = %user.identity,
                enforced_version = %enforced.version,
                shadow_version = %shadow.version,
                enforced = %live,
                shadow = %cand,
                enforced_steps = ?decision.steps,
                shadow_steps = ?shadowed.steps,
                "shadow policy disagrees"
            );
        }
    }
}
