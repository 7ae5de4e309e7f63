use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::shared::{Counted, SharedState, Sharing};
use palisade_core::{BoxError, KeyKind, MissingKey, RateLimited, RejectReason};
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::{Mode, OnMissingKey};
use crate::headers::{NoHeaders, ResponseHeaders};
use crate::key::{ExtractKey, Global};
use crate::limiter::{Check, Decision, Limiter, Target};

/// State shared by a layer and every service it makes.
pub(crate) struct Shared<K, H> {
    pub(crate) limiter: Limiter,
    pub(crate) extractor: K,
    pub(crate) headers: H,
    pub(crate) mode: Mode,
    pub(crate) on_missing_key: OnMissingKey,
}

/// What to do with one request.
pub(crate) enum Verdict<P> {
    /// Call the service, then add the admission's headers.
    Admit(P),
    /// Call the service without charging a bucket (no key, and the layer
    /// lets such requests through): no headers.
    Allow,
    /// The bucket was empty.
    Limited {
        retry_after: Duration,
        kind: KeyKind,
    },
    /// No key, and the layer rejects such requests.
    Missing,
}

impl<K, H> Shared<K, H> {
    /// Decides for `request`. Emits no verdict (the caller knows whether a
    /// refusal is final); what the request met on the way it reports once:
    /// a malformed header on its first `check`, a charge to the overflow
    /// bucket on the first check that makes one (see [`Check`]).
    #[inline]
    pub(crate) fn decide<Req, Res>(&self, request: &Req, check: Check) -> Verdict<H::Pending>
    where
        K: ExtractKey<Req>,
        H: ResponseHeaders<Res>,
    {
        let target = if self.limiter.is_keyed() {
            let (key, malformed) = self.extractor.extract_checked(request);
            if let Some(header) = malformed
                && check == Check::First
            {
                self.limiter.emit_malformed(header);
            }
            match key {
                Some(key) => self.limiter.target_of(&key),
                None => match self.on_missing_key {
                    OnMissingKey::Fallback => Target::Shared,
                    OnMissingKey::Reject => return Verdict::Missing,
                    OnMissingKey::Allow => return Verdict::Allow,
                },
            }
        } else {
            Target::Shared
        };
        match self.limiter.decide(target, check) {
            Decision::Admitted(admission) => Verdict::Admit(self.headers.admitted(&admission)),
            Decision::Rejected { retry_after, kind } => Verdict::Limited { retry_after, kind },
        }
    }

    /// The error for a final refusal, after emitting its event.
    pub(crate) fn reject(&self, retry_after: Duration, kind: KeyKind) -> Box<RateLimited> {
        self.limiter.emit_rejected(RejectReason::RateLimited);
        Box::new(RateLimited::new(
            self.limiter.policy().clone(),
            retry_after,
            kind,
        ))
    }

    /// The error for a request without a key, after emitting its event.
    pub(crate) fn reject_missing(&self) -> Box<MissingKey> {
        self.limiter.emit_rejected(RejectReason::MissingKey);
        Box::new(MissingKey::new(
            self.limiter.policy().clone(),
            self.limiter.key_kind(),
        ))
    }
}

/// Rate-limits the requests to an inner service. Made by
/// [`RateLimitLayer`](super::RateLimitLayer).
///
/// `poll_ready` only asks the inner service; each request is admitted or
/// refused when it is called, so a clone per request (as axum makes) is
/// fine, and a refused request never holds a slot.
///
/// The inner service must be `Clone` (as axum, tonic and hyper services
/// are): in [`Mode::Wait`], a waiting request takes a clone with it, and
/// makes that clone ready only once its bucket admits it. The service made
/// ready for the call stays in place for the next one, so whatever its
/// readiness holds (a `tower::limit::ConcurrencyLimit` permit, a
/// `tower::buffer::Buffer` slot) is never kept through a wait. A waiting
/// request that is admitted and then finds its service failing gets the
/// service's error.
///
/// `M` is the layer's kind of [shared-state handle](palisade_core::shared).
pub struct RateLimit<S, K: 'static = Global, H: 'static = NoHeaders, M: Sharing = Counted> {
    inner: S,
    shared: SharedState<Shared<K, H>, M>,
}

impl<S, K, H, M: Sharing> RateLimit<S, K, H, M> {
    pub(crate) fn from_shared(inner: S, shared: SharedState<Shared<K, H>, M>) -> Self {
        Self { inner, shared }
    }

    /// The limiter this service shares with its layer.
    pub fn limiter(&self) -> &Limiter {
        &self.shared.limiter
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the wrapper, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, K, H, M: Sharing> Clone for RateLimit<S, K, H, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, K, H, M: Sharing> fmt::Debug for RateLimit<S, K, H, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.shared.limiter)
            .field("mode", &self.shared.mode)
            .finish()
    }
}

impl<S, K, H, M, Req> Service<Req> for RateLimit<S, K, H, M>
where
    M: Sharing,
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    K: ExtractKey<Req>,
    H: ResponseHeaders<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, K, H, M>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let shared = &*self.shared;
        let pending = match shared.decide::<Req, S::Response>(&request, Check::First) {
            Verdict::Admit(pending) => Some(pending),
            Verdict::Allow => None,
            Verdict::Missing => return ResponseFuture::missing(shared.reject_missing()),
            Verdict::Limited { retry_after, kind } => match shared.mode {
                Mode::Wait { max_delay } if retry_after <= max_delay => {
                    // The wait takes a clone and makes it ready once
                    // admitted: the ready service stays here, with
                    // whatever capacity its readiness holds, for the next
                    // call.
                    return ResponseFuture::waiting(
                        self.inner.clone(),
                        request,
                        self.shared.clone(),
                        retry_after,
                        max_delay,
                        kind == KeyKind::Overflow,
                    );
                }
                _ => return ResponseFuture::limited(shared.reject(retry_after, kind)),
            },
        };
        shared.limiter.emit_admitted();
        ResponseFuture::called(self.inner.call(request), pending)
    }
}
