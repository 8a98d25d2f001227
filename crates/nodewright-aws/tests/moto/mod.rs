//! moto's AWS emulator, started on a free loopback port for one test and
//! stopped when dropped. `scripts/test` installs it (`pip install 'moto[server]'`).
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// Start moto on a free loopback port and wait until it answers.
    pub fn start() -> Moto {
        // Tests run in parallel: never hand the same free port out twice.
        static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
        let port = loop {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut given = GIVEN.lock().unwrap();
            if !given.contains(&port) {
                given.push(port);
                break port;
            }
        };
        // `python3 -m moto.server` works wherever pip put moto, on PATH or not.
        let mut child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed to run moto's server (scripts/test installs moto[server] from PyPI)");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("moto's server exited ({status}) before listening on port {port}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "moto's server did not listen on port {port} within 60 s (is moto[server] installed? scripts/test installs it)"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, endpoint: format!("http://127.0.0.1:{port}") }
    }

    /// An SQS client for this server (test credentials, us-east-1).
    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "moto"))
            .endpoint_url(&self.endpoint)
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }
}

impl Moto {
    /// An EC2 client for this server (test credentials, us-east-1).
    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::from_conf(self.ec2_config().build())
    }

    /// An SSM client for this server (test credentials, us-east-1).
    pub fn ssm(&self) -> aws_sdk_ssm::Client {
        let config = aws_sdk_ssm::Config::builder()
            .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
            .region(aws_sdk_ssm::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ssm::config::Credentials::new("test", "test", None, None, "moto"))
            .endpoint_url(&self.endpoint)
            .build();
        aws_sdk_ssm::Client::from_conf(config)
    }

    /// The EC2 client configuration for this server, to add interceptors to.
    pub fn ec2_config(&self) -> aws_sdk_ec2::config::Builder {
        aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ec2::config::Credentials::new("test", "test", None, None, "moto"))
            .endpoint_url(&self.endpoint)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
