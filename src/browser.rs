//! A real browser for the dashboard's tests: Debian's chromium, headless, driven through
//! chromedriver (WebDriver, with fantoccini). Needs `chromium` and `chromedriver` (Debian's
//! packages `chromium` and `chromium-driver`, which `.ci/run` installs), or their paths in
//! `CHROMIUM` and `CHROMEDRIVER`.

pub use fantoccini;
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The path of a tool the browser tests need: `$var`, else `default`.
pub fn tool(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.exists(),
        "{} not found: install Debian's chromium and chromium-driver (`.ci/run` does), or set {var}",
        path.display()
    );
    path
}

/// chromedriver and the browsers it starts, stopped however the test ends.
pub struct Driver {
    child: Child,
    profile: PathBuf,
    port: u16,
}

impl Driver {
    /// chromedriver on a free port; browsers keep their profile in `profile` (removed at
    /// the end).
    pub fn start(profile: PathBuf) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(tool("CHROMEDRIVER", "/usr/bin/chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let driver = Driver {
            child,
            profile,
            port,
        };
        crate::eventually("chromedriver listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        driver
    }

    /// A headless chromium session (1280x900).
    pub async fn session(&self) -> Client {
        let chromium = tool("CHROMIUM", "/usr/bin/chromium");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         format!("--user-data-dir={}", self.profile.display())],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A browser left by a session that was not closed: found by its profile dir.
        let profile = self.profile.display().to_string();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&profile) {
                if let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() {
                    // SAFETY: a plain syscall on a process this test's browser started.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Polls `check` (a page's state) until it holds, or fails after 30 s.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of the first element `css` finds, or `None` if there is none.
pub async fn text(client: &Client, css: &str) -> Option<String> {
    match client.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.ok(),
        Err(_) => None,
    }
}

/// Whether the first element `css` finds is shown.
pub async fn displayed(client: &Client, css: &str) -> bool {
    match client.find(Locator::Css(css)).await {
        Ok(e) => e.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

pub async fn click(client: &Client, css: &str) {
    let element = client.find(Locator::Css(css)).await;
    let element = element.unwrap_or_else(|e| panic!("no {css} to click: {e}"));
    element.click().await.unwrap();
}

pub async fn type_in(client: &Client, css: &str, text: &str) {
    let element = client.find(Locator::Css(css)).await;
    let element = element.unwrap_or_else(|e| panic!("no {css} to type in: {e}"));
    element.send_keys(text).await.unwrap();
}

/// Saves the page as `dir/name`.
pub async fn screenshot(client: &Client, dir: &Path, name: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let png = client.screenshot().await.expect("a screenshot");
    std::fs::write(dir.join(name), png).unwrap();
}

/// Runs `drive` with a fresh headless browser (its profile in `profile`), within `within`;
/// the browser and chromedriver are stopped however it ends.
pub fn with_browser(profile: PathBuf, within: Duration, drive: impl AsyncFnOnce(&Client)) {
    let driver = Driver::start(profile);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let client = driver.session().await;
        let outcome = tokio::time::timeout(within, drive(&client)).await;
        let _ = client.close().await;
        outcome.unwrap_or_else(|_| panic!("the browser took over {within:?}"));
    });
}
