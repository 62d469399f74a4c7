//! `meshwire chat`: two chat processes that bootstrap through a `meshwire node` subscribed to
//! their topic exchange lines typed on stdin (piped), each printed with its author; the end
//! of stdin ends a chat.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bin, eventually, new_key, node_config, NodeProc};

const TOPIC: &str = "org.meshwire.chat";

struct Chat {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    peer: String,
}

impl Chat {
    fn start(bootstrap: &str) -> Chat {
        let mut child = bin()
            .args(["chat", TOPIC, "--bootstrap", bootstrap])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        for (out, tag) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
                "",
            ),
            (Box::new(child.stderr.take().unwrap()), "stderr: "),
        ] {
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(format!("{tag}{line}"));
                }
            });
        }
        let mut chat = Chat {
            child,
            lines,
            peer: String::new(),
        };
        chat.peer = chat.wait("meshwire: peer id ").trim().to_string();
        chat
    }

    fn has(&self, line: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l == line)
    }

    fn wait(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(prefix))
            {
                return l[prefix.len()..].to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no line {prefix:?} in {:#?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Says `text` (numbered, once every 300 ms: the mesh may still be forming) until
    /// `other` prints it with our peer id.
    fn say_until_heard(&mut self, other: &Chat, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in 0.. {
            let line = format!("{text} {n}");
            self.say(&line);
            std::thread::sleep(Duration::from_millis(300));
            let heard = other
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with(&format!("{}: {text} ", self.peer)));
            if heard {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} not heard: {:#?}\n{:#?}",
                self.lines.lock().unwrap(),
                other.lines.lock().unwrap()
            );
        }
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_chats_exchange_lines_through_a_node_on_their_topic() {
    let dir = tempfile::tempdir().unwrap();
    let (ka, _) = new_key(dir.path(), "a.key");
    let a = NodeProc::start(&node_config(
        dir.path(),
        "a.toml",
        &ka,
        None,
        &format!("[pubsub]\ntopics = [\"{TOPIC}\"]\nheartbeat_initial_delay = \"100ms\"\n"),
    ));
    let status: serde_json::Value = serde_json::from_str(&a.get("/status.json")).unwrap();
    assert_eq!(status["pubsub_topics"][0]["topic"], TOPIC);

    let mut one = Chat::start(&a.addr);
    let mut two = Chat::start(&a.addr);
    // Each learns that the node is on the topic.
    for c in [&one, &two] {
        c.wait(&format!("meshwire: {} joined {TOPIC}", a.peer));
    }
    one.say_until_heard(&two, "hello from one");
    two.say_until_heard(&one, "hello from two");
    // The node has both chatters in its mesh of the topic.
    eventually(Duration::from_secs(10), "both chatters in the mesh", || {
        let s: serde_json::Value = serde_json::from_str(&a.get("/status.json")).unwrap();
        s["pubsub_topics"][0]["mesh_peers"] == 2
    });
    // A line is not echoed to its author.
    assert!(!one.has(&format!("{}: hello from one 0", one.peer)));

    // The end of stdin ends the chat, successfully.
    drop(one.child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = one.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "chat still running after stdin closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{:#?}", one.lines.lock().unwrap());
}
