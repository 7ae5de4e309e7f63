//! A tonic server protected by one palisade stack, and a tonic client
//! protected by another.
//!
//! The server's `Inventory/Lookup` misbehaves on purpose depending on the
//! SKU asked for: `slow-*` takes two seconds, `panic-*` panics, `down-*`
//! answers UNAVAILABLE. The server's stack turns each fault into the gRPC
//! status a client can act on; the client's stack adds its own breaker and
//! deadline around the channel.
//!
//! Run with `cargo run --example tonic_server`. It starts the server on
//! 127.0.0.1 (any free port), makes a round of calls, prints what each one
//! got, and exits; pass `--serve` to keep serving until Ctrl-C.
//!
//! The service is written by hand (`palisade_workspace::grpc`), so no
//! `protoc` is needed.

#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::time::Duration;

use palisade::breaker::CircuitBreakerLayer;
use palisade::bulkhead::BulkheadLayer;
use palisade::core::classify::GrpcErrorsAsFailures;
use palisade::panic::CatchPanicLayer;
use palisade::ratelimit::RateLimitLayer;
use palisade::timeout::TimeoutLayer;
use palisade::{BoxError, Stack};
use palisade_workspace::grpc::{InventoryClient, InventoryServer, LookupReply, LookupRequest};
use tokio::net::TcpListener;
use tonic::Status;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tower::ServiceBuilder;

async fn lookup(request: LookupRequest) -> Result<LookupReply, Status> {
    let sku = request.sku;
    if sku.starts_with("slow-") {
        tokio::time::sleep(Duration::from_secs(2)).await;
    } else if sku.starts_with("panic-") {
        panic!("inventory index corrupted for {sku}");
    } else if sku.starts_with("down-") {
        return Err(Status::unavailable("warehouse database unreachable"));
    }
    let count = u32::try_from(sku.len()).unwrap_or(u32::MAX);
    Ok(LookupReply { sku, count })
}

async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), BoxError> {
    // The server protects itself: a rate limit, a breaker that counts gRPC
    // failure codes, a deadline that honours the client's `grpc-timeout`,
    // a bulkhead, and panic containment, with errors sent back as statuses.
    let policy = Stack::new("inventory-server")
        .rate_limit(RateLimitLayer::builder().quota(20, Duration::from_secs(1)))
        .circuit_breaker(
            CircuitBreakerLayer::builder()
                .classifier(GrpcErrorsAsFailures::new())
                .minimum_calls(20),
        )
        .timeout(
            TimeoutLayer::builder()
                .timeout(Duration::from_millis(300))
                .http(),
        )
        .concurrency_limit(BulkheadLayer::builder().max_concurrent(16))
        .catch_panic(CatchPanicLayer::builder())
        .grpc_errors()
        .build()?;

    Server::builder()
        .layer(policy)
        .add_service(InventoryServer::new(lookup))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await?;
    Ok(())
}

async fn run_client(addr: SocketAddr) -> Result<(), BoxError> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    // The client protects itself too: it stops calling a failing server and
    // bounds how long it waits.
    let client_policy = Stack::new("inventory-client")
        .circuit_breaker(CircuitBreakerLayer::builder().classifier(GrpcErrorsAsFailures::new()))
        .timeout(TimeoutLayer::builder().timeout(Duration::from_secs(1)))
        .grpc_client_errors()
        .build()?;
    let mut client =
        InventoryClient::new(ServiceBuilder::new().layer(client_policy).service(channel));

    println!("{:<16} {:<20} detail", "sku", "answer");
    for sku in ["apple", "slow-pear", "panic-plum", "down-fig"] {
        show(
            sku,
            client
                .lookup(LookupRequest {
                    sku: sku.to_owned(),
                })
                .await,
        );
    }
    // A burst past the server's rate limit of 20 per second.
    let mut limited = 0;
    for i in 0..30 {
        let result = client
            .lookup(LookupRequest {
                sku: format!("kiwi-{i}"),
            })
            .await;
        if matches!(&result, Err(status) if status.code() == tonic::Code::ResourceExhausted) {
            limited += 1;
        }
    }
    println!(
        "{:<16} {:<20} {limited} of 30 refused by the server's rate limit",
        "kiwi-*", "burst"
    );
    Ok(())
}

fn show(sku: &str, result: Result<tonic::Response<LookupReply>, Status>) {
    match result {
        Ok(reply) => println!("{sku:<16} {:<20} count {}", "OK", reply.get_ref().count),
        Err(status) => println!(
            "{sku:<16} {:<20} {}",
            format!("{:?}", status.code()),
            status.message()
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let keep_serving = std::env::args().any(|a| a == "--serve");
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("inventory gRPC server on {addr}\n");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, async {
        let _ = stopped.await;
    }));

    run_client(addr).await?;

    if keep_serving {
        println!("\nserving on {addr}; Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    let _ = stop.send(());
    server.await??;
    Ok(())
}
