//! Addresses and routes inside the jail, set through rtnetlink (the
//! container image has no `ip`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};

use crate::model::JailNet;

/// Brings `lo` and the TUN up, gives the TUN the SUT's addresses and routes
/// everything (both families) through it.
pub(super) fn configure(tun: &str, net: &JailNet) -> Result<(), String> {
    // A private current-thread runtime: the child is single-threaded and
    // about to exec, so nothing else runs here.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let index = |name: &'static str| {
            let handle = handle.clone();
            async move {
                let mut links = handle.link().get().match_name(name.to_string()).execute();
                match links.try_next().await {
                    Ok(Some(link)) => Ok(link.header.index),
                    Ok(None) => Err(format!("no link named {name}")),
                    Err(e) => Err(format!("looking up {name}: {e}")),
                }
            }
        };
        let lo = index("lo").await?;
        let tun_idx = index(super::child::TUN_NAME).await?;
        let _ = tun;
        for idx in [lo, tun_idx] {
            handle
                .link()
                .set(LinkUnspec::new_with_index(idx).up().build())
                .execute()
                .await
                .map_err(|e| format!("setting link {idx} up: {e}"))?;
        }
        handle
            .address()
            .add(tun_idx, IpAddr::V4(net.sut_v4), net.prefix_v4)
            .execute()
            .await
            .map_err(|e| format!("adding {}: {e}", net.sut_v4))?;
        handle
            .address()
            .add(tun_idx, IpAddr::V6(net.sut_v6), net.prefix_v6)
            .execute()
            .await
            .map_err(|e| format!("adding {}: {e}", net.sut_v6))?;
        let v4 = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .output_interface(tun_idx)
            .build();
        handle
            .route()
            .add(v4)
            .execute()
            .await
            .map_err(|e| format!("adding the IPv4 default route: {e}"))?;
        let v6 = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
            .output_interface(tun_idx)
            .build();
        handle
            .route()
            .add(v6)
            .execute()
            .await
            .map_err(|e| format!("adding the IPv6 default route: {e}"))?;
        Ok::<(), String>(())
    })
}
