//! A real HTTP server: nginx as one plain process in a namespace, with a
//! configuration, logs and temporary files of its own in a scratch directory,
//! answering every request with a short 200.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::net::NetNs;
use crate::Scratch;

/// nginx serving in a namespace; stopped on drop.
pub struct Nginx {
    child: Child,
    dir: Scratch,
}

impl Nginx {
    /// Starts nginx in `ns` listening on each of `listen` (addresses with
    /// ports), and waits until the first accepts connections.
    pub fn start(ns: &NetNs, listen: &[SocketAddr]) -> Nginx {
        let dir = Scratch::new("nginx");
        let d = dir.path().display().to_string();
        let listens: String = listen
            .iter()
            .map(|a| format!("    listen {a};\n"))
            .collect();
        // One process, in the foreground: nothing outlives the handle.
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
               proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{\n{listens}    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = ns
            .command("nginx")
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx (scripts/test.sh installs nginx-light)");
        let mut n = Nginx { child, dir };
        let first = listen[0];
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if ns.enter(move || {
                TcpStream::connect_timeout(&first, Duration::from_millis(200)).is_ok()
            }) {
                return n;
            }
            if let Ok(Some(st)) = n.child.try_wait() {
                panic!("nginx exited ({st}): {}", n.error_log());
            }
            assert!(
                Instant::now() < end,
                "nginx did not listen on {first} within 10 s: {}",
                n.error_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What nginx logged.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
