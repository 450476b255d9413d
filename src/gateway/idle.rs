//! A response body that fails when no data arrives for a while: the only timeout on a
//! streaming body (SSE streams send heartbeats, so a silent stream is a dead one).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The error when the stream went idle.
#[derive(Debug, thiserror::Error)]
#[error("upstream body idle timeout")]
pub struct IdleTimedOut;

/// Wraps a body with an idle timeout.
///
/// The timer exists only once the body has to wait: a body whose frames are all ready (a
/// small response read in one go) never touches the timer wheel.
pub struct IdleTimeout<B> {
    inner: Pin<Box<B>>,
    sleep: Option<Pin<Box<Sleep>>>,
    idle: Duration,
    /// A frame arrived since the timer was last (re)started.
    progressed: bool,
}

impl<B> IdleTimeout<B> {
    /// Wrap `inner`; the timer restarts whenever the body waits after a frame.
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleTimeout {
            inner: Box::pin(inner),
            sleep: None,
            idle,
            progressed: false,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(r)) => {
                self.progressed = true;
                Poll::Ready(Some(r.map_err(Into::into)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let idle = self.idle;
                let progressed = std::mem::take(&mut self.progressed);
                let sleep = match &mut self.sleep {
                    Some(s) => {
                        if progressed {
                            s.as_mut().reset(Instant::now() + idle);
                        }
                        s
                    }
                    None => self.sleep.insert(Box::pin(tokio::time::sleep(idle))),
                };
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(IdleTimedOut)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
