//! `palisade.example.Inventory`: a one-method gRPC service written by hand,
//! as tonic's generated code would be, so the examples and tests need no
//! `protoc`.
//!
//! ```text
//! service Inventory {
//!   rpc Lookup(LookupRequest) returns (LookupReply);
//! }
//! message LookupRequest { string sku = 1; }
//! message LookupReply { string sku = 1; uint32 count = 2; }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Request, Response, Status};

/// The request of `Lookup`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LookupRequest {
    /// The stock-keeping unit to look up.
    #[prost(string, tag = "1")]
    pub sku: String,
}

/// The reply of `Lookup`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LookupReply {
    /// The unit looked up.
    #[prost(string, tag = "1")]
    pub sku: String,
    /// How many are in stock.
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

/// The full name of the service.
pub const SERVICE: &str = "palisade.example.Inventory";
/// The path of the `Lookup` method.
pub const LOOKUP: &str = "/palisade.example.Inventory/Lookup";

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The server side: answers `Lookup` with a user function.
pub struct InventoryServer<F> {
    lookup: Arc<F>,
}

impl<F> InventoryServer<F> {
    /// A server answering every `Lookup` with `lookup`.
    pub fn new(lookup: F) -> Self {
        Self {
            lookup: Arc::new(lookup),
        }
    }
}

impl<F> Clone for InventoryServer<F> {
    fn clone(&self) -> Self {
        Self {
            lookup: Arc::clone(&self.lookup),
        }
    }
}

impl<F> fmt::Debug for InventoryServer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InventoryServer").finish_non_exhaustive()
    }
}

impl<F> tonic::server::NamedService for InventoryServer<F> {
    const NAME: &'static str = SERVICE;
}

/// Adapts the user function to tonic's unary service shape.
struct Lookup<F>(Arc<F>);

impl<F, Fut> tonic::server::UnaryService<LookupRequest> for Lookup<F>
where
    F: Fn(LookupRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<LookupReply, Status>> + Send + 'static,
{
    type Response = LookupReply;
    type Future = BoxFuture<Result<Response<LookupReply>, Status>>;

    fn call(&mut self, request: Request<LookupRequest>) -> Self::Future {
        let lookup = Arc::clone(&self.0);
        Box::pin(async move { lookup(request.into_inner()).await.map(Response::new) })
    }
}

impl<F, Fut> tower_service::Service<http::Request<Body>> for InventoryServer<F>
where
    F: Fn(LookupRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<LookupReply, Status>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let lookup = Lookup(Arc::clone(&self.lookup));
        Box::pin(async move {
            if req.uri().path() != LOOKUP {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            let codec = tonic_prost::ProstCodec::<LookupReply, LookupRequest>::default();
            Ok(tonic::server::Grpc::new(codec).unary(lookup, req).await)
        })
    }
}

/// The client side, over any gRPC transport: a tonic `Channel`, or a
/// `Channel` wrapped in palisade layers.
#[derive(Clone, Debug)]
pub struct InventoryClient<T> {
    inner: tonic::client::Grpc<T>,
}

impl<T> InventoryClient<T>
where
    T: tonic::client::GrpcService<Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: http_body::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    /// A client over `transport`.
    pub fn new(transport: T) -> Self {
        Self {
            inner: tonic::client::Grpc::new(transport),
        }
    }

    /// Calls `Lookup`.
    ///
    /// # Errors
    ///
    /// The call's `Status`, or `UNKNOWN` when the transport was not ready.
    pub async fn lookup(
        &mut self,
        request: impl tonic::IntoRequest<LookupRequest>,
    ) -> Result<Response<LookupReply>, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("transport not ready: {}", e.into())))?;
        let codec = tonic_prost::ProstCodec::<LookupRequest, LookupReply>::default();
        self.inner
            .unary(
                request.into_request(),
                PathAndQuery::from_static(LOOKUP),
                codec,
            )
            .await
    }
}
