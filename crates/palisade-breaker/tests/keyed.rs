//! Keyed breakers: one per key, bounded in number, never evicting an open
//! breaker.

use std::time::Duration;

use palisade_breaker::CircuitBreakerLayer;
use palisade_breaker::error::CircuitOpen;
use palisade_core::{BoxError, CircuitState, ManualClock};
use tower::{Layer, ServiceExt, service_fn};

#[derive(Clone, Copy)]
struct Req {
    host: u32,
    fail: bool,
}

fn layer(
    max_keys: usize,
    clock: &ManualClock,
) -> palisade_breaker::KeyedCircuitBreakerLayer<u32, fn(&Req) -> u32> {
    CircuitBreakerLayer::builder()
        .clock(clock.clock())
        .count_window(1)
        .minimum_calls(1)
        .open_wait(Duration::from_secs(10))
        .build_keyed(max_keys, (|r: &Req| r.host) as fn(&Req) -> u32)
        .unwrap()
}

async fn hit<S>(svc: &S, host: u32, fail: bool) -> Result<(), BoxError>
where
    S: tower::Service<Req, Response = (), Error = BoxError> + Clone,
{
    svc.clone().oneshot(Req { host, fail }).await
}

fn inner() -> impl tower::Service<Req, Response = (), Error = BoxError, Future = impl Send> + Clone
{
    service_fn(|r: Req| async move {
        if r.fail {
            Err::<(), BoxError>("down".into())
        } else {
            Ok(())
        }
    })
}

#[tokio::test]
async fn each_key_has_its_own_breaker() {
    let clock = ManualClock::new();
    let layer = layer(8, &clock);
    let svc = layer.layer(inner());
    hit(&svc, 1, true).await.unwrap_err();
    hit(&svc, 2, false).await.unwrap();
    let handle = layer.handle();
    assert_eq!(handle.get(&1).unwrap().state(), CircuitState::Open);
    assert_eq!(handle.get(&2).unwrap().state(), CircuitState::Closed);
    assert!(hit(&svc, 1, false).await.unwrap_err().is::<CircuitOpen>());
    hit(&svc, 2, false).await.unwrap();
    assert_eq!(handle.len(), 2);
    // Clones of the layer share the map.
    let other = layer.clone().layer(inner());
    assert!(hit(&other, 1, false).await.unwrap_err().is::<CircuitOpen>());
}

#[tokio::test]
async fn the_least_recently_used_closed_breaker_makes_room() {
    let clock = ManualClock::new();
    let layer = layer(3, &clock);
    let svc = layer.layer(inner());
    for host in [1, 2, 3] {
        hit(&svc, host, false).await.unwrap();
    }
    hit(&svc, 1, false).await.unwrap(); // 2 is now the least recently used
    hit(&svc, 4, false).await.unwrap();
    let mut keys = layer.handle().keys();
    keys.sort_unstable();
    assert_eq!(keys, vec![1, 3, 4]);
}

#[tokio::test]
async fn an_open_breaker_is_never_evicted() {
    let clock = ManualClock::new();
    let layer = layer(2, &clock);
    let svc = layer.layer(inner());
    let handle = layer.handle();
    hit(&svc, 1, true).await.unwrap_err();
    hit(&svc, 2, false).await.unwrap();
    // Key 1 (open) is older, but key 2 (closed) is the one evicted.
    hit(&svc, 3, false).await.unwrap();
    let mut keys = handle.keys();
    keys.sort_unstable();
    assert_eq!(keys, vec![1, 3]);
    assert_eq!(handle.get(&1).unwrap().state(), CircuitState::Open);

    // With every tracked breaker open, new keys share the overflow breaker
    // and the open ones stay.
    hit(&svc, 3, true).await.unwrap_err();
    hit(&svc, 5, false).await.unwrap();
    hit(&svc, 6, true).await.unwrap_err();
    assert_eq!(handle.len(), 2);
    assert!(handle.get(&5).is_none());
    assert_eq!(handle.overflow().state(), CircuitState::Open);
    assert!(hit(&svc, 1, false).await.unwrap_err().is::<CircuitOpen>());
    assert!(hit(&svc, 7, false).await.unwrap_err().is::<CircuitOpen>());
}
