//! A throwaway `redis-server` on a spare loopback port, for tests that stop
//! Redis and bring it back (empty, as after a failover to a fresh node).

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A running `redis-server`, killed when dropped.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    /// A free loopback port for [`RedisServer::start`] (and a restart on it).
    pub fn spare_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// Starts a server without persistence on `port` and waits until it accepts connections.
    pub async fn start(port: u16) -> Self {
        let server = Self {
            child: Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
            port,
        };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not start on {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
