//! Request-body machinery the decision uses: splicing edits into JSON bodies, buffering bodies
//! within a budget, and the outgoing body the gateway sends upstream.

pub mod buffers;
pub mod guarded;
pub mod outgoing;
mod scan;
pub mod splice;
