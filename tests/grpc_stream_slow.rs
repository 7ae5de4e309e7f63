//! A healthy gRPC server stream, longer than the breaker's slow-call
//! duration, must not count as a slow call.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::Stack;
use palisade::breaker::CircuitBreakerLayer;
use palisade::core::CircuitState;
use palisade::core::classify::GrpcErrorsAsFailures;
use palisade_workspace::grpc::{LookupReply, LookupRequest};
use tonic::body::Body;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::tokio_stream::{self, Stream, StreamExt};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

type Replies = Pin<Box<dyn Stream<Item = Result<LookupReply, Status>> + Send>>;
type BoxFut<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// `palisade.stream.Feed/Watch`: five replies, 150 ms apart, then OK.
#[derive(Clone)]
struct Feed;
struct Watch;

impl tonic::server::NamedService for Feed {
    const NAME: &'static str = "palisade.stream.Feed";
}

impl tonic::server::ServerStreamingService<LookupRequest> for Watch {
    type Response = LookupReply;
    type ResponseStream = Replies;
    type Future = BoxFut<Result<Response<Replies>, Status>>;
    fn call(&mut self, _: Request<LookupRequest>) -> Self::Future {
        let replies = tokio_stream::iter(0..5u32).then(|i| async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            Ok(LookupReply {
                sku: String::new(),
                count: i,
            })
        });
        Box::pin(async move { Ok(Response::new(Box::pin(replies) as Replies)) })
    }
}

impl tower::Service<http::Request<Body>> for Feed {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFut<Result<http::Response<Body>, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let codec = tonic_prost::ProstCodec::<LookupReply, LookupRequest>::default();
        Box::pin(async move {
            Ok(tonic::server::Grpc::new(codec)
                .server_streaming(Watch, req)
                .await)
        })
    }
}

#[tokio::test]
async fn healthy_server_streams_are_not_slow_calls() {
    let policy = Stack::new("feed")
        .circuit_breaker(
            CircuitBreakerLayer::builder()
                .classifier(GrpcErrorsAsFailures::new())
                .count_window(2)
                .minimum_calls(2)
                .slow_call_duration(Duration::from_millis(500))
                .slow_call_rate_threshold(1.0)
                .open_wait(Duration::from_secs(600)),
        )
        .grpc_errors()
        .build()
        .unwrap();
    let breaker = policy.circuit_breaker().handle();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .layer(policy)
            .add_service(Feed)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    for _ in 0..2 {
        let call = async {
            client.ready().await.unwrap();
            let codec = tonic_prost::ProstCodec::<LookupRequest, LookupReply>::default();
            let path = PathAndQuery::from_static("/palisade.stream.Feed/Watch");
            let mut stream = client
                .server_streaming(Request::new(LookupRequest::default()), path, codec)
                .await
                .unwrap()
                .into_inner();
            let mut got = 0;
            while stream.message().await.unwrap().is_some() {
                got += 1;
            }
            got
        };
        let got = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .unwrap();
        assert_eq!(got, 5, "the whole stream arrived and ended OK");
    }
    // Each response head came at once; only the streams were long.
    assert_eq!(
        breaker.state(),
        CircuitState::Closed,
        "healthy streams counted as slow calls"
    );
}
