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
        Self::start_with_public_parameters(&[])
    }

    /// Start moto with public SSM parameters under `/aws/service/…` (where
    /// the EKS-optimised AMI ids live, which moto does not carry and
    /// refuses to let a client write): each `(name, value)` is put into its
    /// SSM backend before it serves; the value `@amazon-x86_64` stands for
    /// the id of the first x86_64 image owned by Amazon in moto's EC2.
    pub fn start_with_public_parameters(parameters: &[(&str, &str)]) -> Moto {
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
        // moto.server's `main`, run after the parameters are in, works
        // wherever pip put moto, on PATH or not.
        // moto has no capacity reservations: `capacity_reservations.py`
        // adds them to its EC2 before it serves.
        let mut args: Vec<String> = vec!["-c".into(), format!("{CAPACITY_RESERVATIONS}\n{PUBLIC_PARAMETERS}")];
        args.extend(parameters.iter().map(|(name, value)| format!("{name}={value}")));
        args.push("--".into());
        args.extend(["-H".into(), "127.0.0.1".into(), "-p".into(), port.to_string()]);
        let mut child = Command::new("python3")
            .args(&args)
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

    /// An IAM client for this server (test credentials).
    pub fn iam(&self) -> aws_sdk_iam::Client {
        let config = aws_sdk_iam::Config::builder()
            .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
            .region(aws_sdk_iam::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_iam::config::Credentials::new("test", "test", None, None, "moto"))
            .endpoint_url(&self.endpoint)
            .build();
        aws_sdk_iam::Client::from_conf(config)
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

/// CreateCapacityReservation and DescribeCapacityReservations for moto's EC2.
const CAPACITY_RESERVATIONS: &str = include_str!("capacity_reservations.py");

/// Puts `NAME=VALUE` arguments (up to `--`) into moto's SSM backend, then
/// runs moto's server with the rest of the arguments.
const PUBLIC_PARAMETERS: &str = r#"
import sys
from moto.core import DEFAULT_ACCOUNT_ID as ACCOUNT
from moto.core.utils import utcnow
from moto.ec2.models import ec2_backends
from moto.ssm.models import Parameter, ssm_backends
from moto.server import main
split = sys.argv.index("--")
pairs, rest = sys.argv[1:split], sys.argv[split + 1:]
ssm = ssm_backends[ACCOUNT]["us-east-1"]
for pair in pairs:
    name, value = pair.split("=", 1)
    if value == "@amazon-x86_64":
        images = ec2_backends[ACCOUNT]["us-east-1"].describe_images(owners=["amazon"])
        value = sorted(i.id for i in images if i.architecture == "x86_64")[0]
    ssm._parameters[name].append(Parameter(account_id=ACCOUNT, name=name, value=value, parameter_type="String",
        description=None, allowed_pattern=None, keyid=None, last_modified_date=utcnow(), version=1, data_type="aws:ec2:image"))
main(rest)
"#;

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// The `n`th Amazon image moto lists.
    pub async fn amazon_image(&self, n: usize) -> String {
        self.ec2().describe_images().owners("amazon").send().await.unwrap().images()[n].image_id().unwrap().to_string()
    }

    /// The EC2 provider of cluster `test-cluster` on this moto, calling it
    /// through `cloud_client`: a VPC with two subnets (us-east-1a and b)
    /// and a security group, all tagged `nodewright.io/discovery: test`,
    /// which its node class selects; the AMI is `ami` or the first Amazon
    /// image moto lists; the catalog is the bundled instance types.
    pub async fn ec2_cloud(&self, cloud_client: aws_sdk_ec2::Client, ami: Option<nodewright_aws::ec2::AmiSource>) -> nodewright_aws::ec2::Ec2Cloud {
        use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
        let tagged = |resource: ResourceType| {
            TagSpecification::builder().resource_type(resource).tags(Tag::builder().key("nodewright.io/discovery").value("test").build()).build()
        };
        let client = self.ec2();
        let vpc = client.create_vpc().cidr_block("10.0.0.0/16").send().await.unwrap().vpc().unwrap().vpc_id().unwrap().to_string();
        for (i, zone) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
            client
                .create_subnet()
                .vpc_id(&vpc)
                .cidr_block(format!("10.0.{i}.0/24"))
                .availability_zone(*zone)
                .tag_specifications(tagged(ResourceType::Subnet))
                .send()
                .await
                .unwrap();
        }
        client
            .create_security_group()
            .group_name("nodes")
            .description("nodes")
            .vpc_id(&vpc)
            .tag_specifications(tagged(ResourceType::SecurityGroup))
            .send()
            .await
            .unwrap();
        let image = self.amazon_image(0).await;
        let selector = std::collections::BTreeMap::from([("nodewright.io/discovery".to_string(), "test".to_string())]);
        let term = vec![nodewright_aws::nodeclass::SelectorTerm { tags: selector, ..Default::default() }];
        let node_class = nodewright_aws::ec2::Ec2NodeClass {
            subnets: term.clone(),
            security_groups: term,
            ami: Some(ami.unwrap_or(nodewright_aws::ec2::AmiSource::Id(image))),
            family: nodewright_aws::nodeclass::AmiFamily::Custom,
            root_volume_gib: 20,
            user_data: "#!/bin/bash\necho hello\n".into(),
            ..Default::default()
        };
        nodewright_aws::ec2::Ec2Cloud::discover(cloud_client, "test-cluster", node_class, &nodewright_core::model::bundled_instance_types()).await.unwrap()
    }
}
