//! The body of a request sent upstream: one buffer, or the pieces of a splice, sent from the
//! request's own buffer so that a large body is never copied to change one member.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::splice::{NewBody, Piece, Spliced};

/// A request body of known length, in one or more buffers.
#[derive(Debug, Default)]
pub struct Outgoing {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl Outgoing {
    /// One buffer.
    pub fn one(b: Bytes) -> Outgoing {
        let len = b.len();
        let mut chunks = VecDeque::new();
        if len > 0 {
            chunks.push_back(b);
        }
        Outgoing { chunks, len }
    }

    /// The body to send for a request whose body was `original`: unchanged, rewritten, or
    /// spliced (the untouched pieces are slices of `original`, shared, not copied).
    pub fn for_request(original: Bytes, new: Option<NewBody>) -> Outgoing {
        match new {
            None => Outgoing::one(original),
            Some(NewBody::Whole(b)) => Outgoing::one(Bytes::from(b)),
            Some(NewBody::Spliced(s)) => Outgoing::spliced(&original, s),
        }
    }

    fn spliced(original: &Bytes, s: Spliced) -> Outgoing {
        let (pieces, new) = s.into_parts();
        let new = Bytes::from(new);
        let mut out = Outgoing {
            chunks: VecDeque::with_capacity(pieces.len()),
            len: 0,
        };
        for p in pieces {
            let (from, a, b) = match p {
                Piece::Source(a, b) => (original, a, b),
                Piece::New(a, b) => (&new, a, b),
            };
            // The ranges come from the splice of this very body, so they are in range;
            // `get` keeps a mistake from panicking (it would show as a short body).
            if from.get(a..b).is_some() && a < b {
                out.len += b - a;
                out.chunks.push_back(from.slice(a..b));
            }
        }
        out
    }

    /// Length in bytes (of what is not yet sent, once sending started).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The body in one buffer (copied only when it is in pieces).
    pub fn into_bytes(mut self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.pop_front().unwrap_or_default(),
            _ => {
                let mut out = Vec::with_capacity(self.len);
                for c in &self.chunks {
                    out.extend_from_slice(c);
                }
                Bytes::from(out)
            }
        }
    }
}

impl Body for Outgoing {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.chunks.pop_front();
        if let Some(c) = &next {
            self.len -= c.len();
        }
        Poll::Ready(next.map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::splice::ObjectBody;
    use http_body_util::BodyExt;

    async fn collect(o: Outgoing) -> (Vec<Bytes>, Bytes) {
        let mut o = o;
        let mut frames = Vec::new();
        while let Some(f) = o.frame().await {
            frames.push(f.unwrap().into_data().unwrap());
        }
        let all: Vec<u8> = frames.iter().flat_map(|b| b.iter().copied()).collect();
        (frames, Bytes::from(all))
    }

    #[tokio::test]
    async fn a_large_splice_is_sent_from_the_original_buffer() {
        let filler = "x".repeat(64 * 1024);
        let src = Bytes::from(format!(
            r#"{{"metadata":{{"owner":"bob"}},"input":"{filler}"}}"#
        ));
        let o = ObjectBody::parse(&src, 64).unwrap();
        let new = o.splice_body(&[("metadata", Some(br#"{"owner":"alice"}"#))]);
        let expected = o.splice(&[("metadata", Some(br#"{"owner":"alice"}"#))]);
        assert!(matches!(new, NewBody::Spliced(_)));
        let out = Outgoing::for_request(src.clone(), Some(new));
        assert_eq!(out.len(), expected.len());
        assert_eq!(out.size_hint().exact(), Some(expected.len() as u64));
        let (frames, all) = collect(out).await;
        assert_eq!(all, expected);
        assert_eq!(frames.len(), 3, "before, the new value, after");
        // The large piece shares the request's memory.
        let big = frames.iter().max_by_key(|f| f.len()).unwrap();
        let inside = src.as_ptr() as usize..src.as_ptr() as usize + src.len();
        assert!(inside.contains(&(big.as_ptr() as usize)));
    }

    #[tokio::test]
    async fn one_buffer_bodies() {
        let (frames, all) = collect(Outgoing::one(Bytes::from_static(b"{}"))).await;
        assert_eq!((frames.len(), &all[..]), (1, &b"{}"[..]));
        let empty = Outgoing::for_request(Bytes::new(), None);
        assert!(empty.is_empty() && empty.is_end_stream());
        assert_eq!(collect(empty).await.0.len(), 0);
        let small = ObjectBody::parse(br#"{"a":1}"#, 64).unwrap();
        let new = small.splice_body(&[("b", Some(b"2"))]);
        assert_eq!(new, NewBody::Whole(br#"{"a":1,"b":2}"#.to_vec()));
        let out = Outgoing::for_request(Bytes::from_static(br#"{"a":1}"#), Some(new));
        assert_eq!(out.into_bytes(), &br#"{"a":1,"b":2}"#[..]);
    }
}
