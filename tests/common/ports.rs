//! Ports a test keeps for itself. A port freed and bound again later can be
//! taken by another process in between; a socket that is bound but not
//! listening holds the port while refusing every connection to it.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::fmt;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// A loopback port held by a bound, non-listening socket until dropped:
/// connections to it are refused, and no other process can bind it.
pub struct HeldPort {
    holder: TcpSocket,
    addr: SocketAddr,
}

impl HeldPort {
    /// Holds a fresh port on 127.0.0.1.
    pub fn new() -> HeldPort {
        let holder = reusable_socket();
        holder
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("binds 127.0.0.1:0");
        let addr = holder.local_addr().expect("bound socket has an address");
        HeldPort { holder, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A listener on the held port, beside the holder (both set
    /// `SO_REUSEPORT`), so dropping the listener refuses connections again
    /// while the port stays ours.
    pub fn listen(&self) -> TcpListener {
        let socket = reusable_socket();
        socket.bind(self.addr).expect("binds the held port");
        socket.listen(64).expect("listens on the held port")
    }
}

impl Default for HeldPort {
    fn default() -> Self {
        HeldPort::new()
    }
}

/// The address, so a held port formats like the `SocketAddr` it holds.
impl fmt::Display for HeldPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr.fmt(f)
    }
}

impl fmt::Debug for HeldPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldPort")
            .field("addr", &self.addr)
            .finish()
    }
}

fn reusable_socket() -> TcpSocket {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket.set_reuseport(true).expect("SO_REUSEPORT");
    socket
}
