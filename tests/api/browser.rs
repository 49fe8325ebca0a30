//! A headless Chromium driven through chromedriver (Debian's `chromium` + `chromium-driver`,
//! installed by `.ci/run`), for the page tests. Elements are named by CSS selectors.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A WebDriver session and the chromedriver serving it, both killed when dropped, with the
/// Chromium they started (even when a test panics before closing its session).
pub struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    profile: std::path::PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium outlives a killed chromedriver; its own profile directory names it.
        let _ = std::process::Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg("--")
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .status();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    pub async fn start() -> Self {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "the page tests need Debian's chromium and chromium-driver: `bash .ci/run` installs them"
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let profile = std::env::temp_dir().join(format!("seckill-chromium-{port}"));
        let caps = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                // The machines have no internet: keep Chromium from reaching for it.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                         "--no-first-run", "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--window-size=1200,1400", format!("--user-data-dir={}", profile.display())]
            }
        });
        let caps = caps.as_object().expect("object").clone();
        let url = format!("http://127.0.0.1:{port}");
        let mut last_error = None;
        // chromedriver takes a moment to listen.
        for _ in 0..100 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Browser {
                        client,
                        _driver: driver,
                        profile,
                    }
                }
                Err(e) => last_error = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot start a Chromium session: {last_error:?}");
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The element's text, or "" while the page has not drawn it.
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_else(|e| panic!("text of {css}: {e}")),
            Err(_) => String::new(),
        }
    }

    pub async fn enabled(&self, css: &str) -> bool {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
            .is_enabled()
            .await
            .unwrap_or_else(|e| panic!("is {css} enabled: {e}"))
    }

    pub async fn displayed(&self, css: &str) -> bool {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
            .is_displayed()
            .await
            .unwrap_or_else(|e| panic!("is {css} displayed: {e}"))
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let input = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"));
        input.clear().await.unwrap_or_else(|e| panic!("clear {css}: {e}"));
        input
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Runs `script` in the page and returns what it returns.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("run {script:?}: {e}"))
    }

    /// Polls until `check` holds (the pages update themselves on timers), for up to 10 s.
    pub async fn wait_for<F: AsyncFnMut(&Self) -> bool>(&self, what: &str, check: F) {
        self.wait_for_within(what, Duration::from_secs(10), check).await
    }

    /// As [`Browser::wait_for`], for something that takes a known while (a queue's admission).
    pub async fn wait_for_within<F: AsyncFnMut(&Self) -> bool>(&self, what: &str, within: Duration, mut check: F) {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if check(self).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let shown = self
            .js("return [document.body.innerText, JSON.stringify(document.body.dataset)]")
            .await;
        panic!(
            "timed out waiting for {what}; the page shows (data {}):\n{}",
            shown[1].as_str().unwrap_or_default(),
            shown[0].as_str().unwrap_or_default()
        );
    }

    pub async fn close(self) {
        self.client.clone().close().await.expect("close the browser session");
    }
}
