use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_http::classify::{ClassifyEos, GrpcEosErrorsAsFailures, GrpcFailureClass};

use super::{Outcome, RecordOutcome};

pin_project! {
    /// A response body that reports the call's outcome when it ends.
    ///
    /// Made by [`GrpcErrorsAsFailures`](super::GrpcErrorsAsFailures) when the
    /// status was not in the response headers. The outcome is recorded:
    ///
    /// - when the trailers arrive, from their `grpc-status`;
    /// - when the body ends without trailers, or reports that it has ended;
    /// - as a failure when the body yields an error, or panics while it is
    ///   polled (recorded as that panic unwinds, whoever catches it).
    ///
    /// If the body is dropped first, the recorder is dropped unrecorded and
    /// the layer reports the call as cancelled. Once the outcome is known
    /// the body is a plain pass-through.
    pub struct ClassifiedBody<B, R, Eos = GrpcEos> {
        #[pin]
        inner: B,
        pending: Option<(Eos, R)>,
    }
}

/// How [`GrpcErrorsAsFailures`](super::GrpcErrorsAsFailures) judges a
/// gRPC body's end: by the trailers' `grpc-status`, and a stream that ends
/// without one as UNKNOWN, as a gRPC client reads it (a proxy that cut
/// the stream off, an upstream gone mid-call).
#[derive(Clone, Debug)]
pub struct GrpcEos {
    codes: GrpcEosErrorsAsFailures,
    /// Whether `UNKNOWN` fails: what a client reads for a stream that ends
    /// with no `grpc-status`, or with one that is no code.
    unknown_fails: bool,
}

impl GrpcEos {
    pub(crate) fn new(codes: GrpcEosErrorsAsFailures, unknown_fails: bool) -> Self {
        Self {
            codes,
            unknown_fails,
        }
    }
}

impl ClassifyEos for GrpcEos {
    type FailureClass = GrpcFailureClass;

    fn classify_eos(self, trailers: Option<&HeaderMap>) -> Result<(), Self::FailureClass> {
        if let Some(value) =
            trailers.and_then(|trailers| trailers.get(&super::response::GRPC_STATUS))
        {
            if super::response::is_grpc_code(value.as_bytes()) {
                return self.codes.classify_eos(trailers);
            }
            return if self.unknown_fails {
                Err(GrpcFailureClass::Error(
                    "the grpc-status is no code; a client reads it as UNKNOWN".to_owned(),
                ))
            } else {
                Ok(())
            };
        }
        if self.unknown_fails {
            Err(GrpcFailureClass::Error(
                "the stream ended without a grpc-status".to_owned(),
            ))
        } else {
            Ok(())
        }
    }

    fn classify_error<E>(self, error: &E) -> Self::FailureClass
    where
        E: fmt::Display + 'static,
    {
        self.codes.classify_error(error)
    }
}

impl<B, R, Eos> ClassifiedBody<B, R, Eos> {
    /// A body whose outcome was already recorded.
    pub fn done(inner: B) -> Self {
        Self {
            inner,
            pending: None,
        }
    }

    /// Whether the outcome is still to be recorded.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Default, R, Eos> Default for ClassifiedBody<B, R, Eos> {
    /// An empty body with nothing left to record, so that layers above (an
    /// error-mapping layer answering a trailers-only gRPC response, say) can
    /// make one.
    fn default() -> Self {
        Self::done(B::default())
    }
}

impl<B: From<bytes::Bytes>, R, Eos> From<bytes::Bytes> for ClassifiedBody<B, R, Eos> {
    /// A body of `bytes` with nothing left to record.
    fn from(bytes: bytes::Bytes) -> Self {
        Self::done(B::from(bytes))
    }
}

impl<B, R, Eos> ClassifiedBody<B, R, Eos>
where
    B: Body,
    R: RecordOutcome,
    Eos: ClassifyEos,
{
    /// A body whose outcome will be decided by `eos` at its end. The call
    /// has answered: `recorder` is told so ([`RecordOutcome::answered`]).
    pub fn pending(inner: B, eos: Eos, mut recorder: R) -> Self {
        recorder.answered();
        let mut body = Self {
            inner,
            pending: Some((eos, recorder)),
        };
        if body.inner.is_end_stream() {
            // Nobody will poll an empty body: decide now, without trailers.
            finish(&mut body.pending, None);
        }
        body
    }
}

fn finish<R: RecordOutcome, Eos: ClassifyEos>(
    pending: &mut Option<(Eos, R)>,
    trailers: Option<&HeaderMap>,
) {
    if let Some((eos, recorder)) = pending.take() {
        recorder.record(match eos.classify_eos(trailers) {
            Ok(()) => Outcome::Success,
            Err(_) => Outcome::Failure,
        });
    }
}

impl<B, R, Eos> Body for ClassifiedBody<B, R, Eos>
where
    B: Body,
    R: RecordOutcome,
    Eos: ClassifyEos,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        // A body that panics is the service failing, whoever catches the
        // panic: recorded as the panic unwinds, where a drop of the
        // recorder alone would say cancelled. Once the outcome is in, the
        // guard holds nothing to record.
        let guard = FailOnUnwind(this.pending);
        let polled = this.inner.as_mut().poll_frame(cx);
        let _ = std::mem::ManuallyDrop::new(guard);
        let frame = ready!(polled);
        if this.pending.is_some() {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        finish(this.pending, Some(trailers));
                    } else if this.inner.is_end_stream() {
                        finish(this.pending, None);
                    }
                }
                Some(Err(_)) => {
                    if let Some((_, recorder)) = this.pending.take() {
                        recorder.record(Outcome::Failure);
                    }
                }
                None => finish(this.pending, None),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Records a failure for the pending outcome if the body's poll unwinds;
/// defused (never dropped) when the poll returns.
struct FailOnUnwind<'a, Eos, R: RecordOutcome>(&'a mut Option<(Eos, R)>);

impl<Eos, R: RecordOutcome> Drop for FailOnUnwind<'_, Eos, R> {
    #[cold]
    fn drop(&mut self) {
        if let Some((_, recorder)) = self.0.take() {
            recorder.record(Outcome::Failure);
        }
    }
}

impl<B: fmt::Debug, R, Eos> fmt::Debug for ClassifiedBody<B, R, Eos> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifiedBody")
            .field("inner", &self.inner)
            .field("pending", &self.pending.is_some())
            .finish()
    }
}
