//! The Python example transformer (jobs/transformers/mask.py) in its three modes, hpush,
//! hpull and io, with byte-exact outputs; needs `python3` on the PATH.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use sha2::{Digest, Sha256};

use crate::support::free_port;
use crate::transformer_serve::{
    Running, chunked, get, post, pull, rev, send, send_with, serve_object, sized, wait_healthy,
};

const SALT: &str = "pepper";

fn mask_py() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("jobs/transformers/mask.py")
}

/// What mask.py writes for `value`: sha256 of salt and value, 16 hex digits.
fn pseudonym(value: &str) -> String {
    hex::encode(Sha256::digest(format!("{SALT}{value}")))[..16].to_string()
}

/// A null email, a missing email, an empty line, unicode, a number, no final newline.
const INPUT: &str = concat!(
    "{\"id\":1,\"email\":\"ada@example.com\",\"name\":\"Ada\"}\n",
    "{\"id\":2,\"email\":null,\"name\":\"Null Email\"}\n",
    "{\"id\":3,\"name\":\"No Email\"}\n",
    "\n",
    "{\"id\":4,\"email\":\"zoë@例え.jp\",\"note\":\"naïve ☃\"}\n",
    "{\"id\":5,\"email\":42}\n",
    "{\"name\":\"Last\",\"email\":\"last@example.com\"}",
);

fn expected() -> String {
    [
        format!(
            "{{\"id\":1,\"email\":\"{}\",\"name\":\"Ada\"}}\n",
            pseudonym("ada@example.com")
        ),
        "{\"id\":2,\"email\":null,\"name\":\"Null Email\"}\n".to_string(),
        "{\"id\":3,\"name\":\"No Email\"}\n".to_string(),
        format!(
            "{{\"id\":4,\"email\":\"{}\",\"note\":\"naïve ☃\"}}\n",
            pseudonym("zoë@例え.jp")
        ),
        format!("{{\"id\":5,\"email\":\"{}\"}}\n", pseudonym("42")),
        format!(
            "{{\"name\":\"Last\",\"email\":\"{}\"}}\n",
            pseudonym("last@example.com")
        ),
    ]
    .concat()
}

/// A bit over 1 MiB of records, and what mask.py makes of them.
fn big() -> (String, String) {
    let (mut input, mut output) = (String::new(), String::new());
    let mut id = 0;
    while input.len() < (1 << 20) + 1000 {
        let email = format!("user{id}@example.com");
        input.push_str(&format!(
            "{{\"id\":{id},\"email\":\"{email}\",\"city\":\"Zürich\"}}\n"
        ));
        output.push_str(&format!(
            "{{\"id\":{id},\"email\":\"{}\",\"city\":\"Zürich\"}}\n",
            pseudonym(&email)
        ));
        id += 1;
    }
    (input, output)
}

/// mask.py serving `comm` on a free port, ready.
async fn start(comm: &str) -> (Running, String) {
    let port = free_port();
    let child = Command::new("python3")
        .arg(mask_py())
        .args(["--comm", comm, "--port", &port.to_string()])
        .env("MASK_SALT", SALT)
        .env_remove("MASK_FIELDS")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("running python3 jobs/transformers/mask.py");
    let mut child = Running(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base, Duration::from_secs(10), &mut child.0).await;
    (child, base)
}

#[tokio::test]
async fn hpush_masks_bodies_with_content_length_and_chunked() {
    let (_python, base) = start("hpush").await;
    let url = format!("{base}/");
    let reply = send(post(&url, "people%2F1.jsonl", sized(INPUT))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), expected());
    assert_eq!(reply.headers["transfer-encoding"], "chunked");
    // Pieces of 7 bytes split lines and multi-byte characters.
    let reply = send(post(&url, "people%2F1.jsonl", chunked(INPUT.as_bytes(), 7))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), expected());
    let reply = send(post(&url, "empty", sized(""))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "");
}

#[tokio::test]
async fn hpush_streams_a_1_mib_chunked_body() {
    let (_python, base) = start("hpush").await;
    let (input, output) = big();
    let reply = send(post(
        &format!("{base}/"),
        "big.jsonl",
        chunked(input.as_bytes(), 7_777),
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.body.len(), output.len());
    assert!(reply.body == output.as_bytes(), "the outputs differ");
}

#[tokio::test]
async fn hpush_answers_400_naming_the_line_that_is_not_json() {
    let (_python, base) = start("hpush").await;
    let client = crate::transformer_serve::client();
    let bad = "{\"id\":1,\"email\":\"a@b\"}\n\n{\"id\":2,\n{\"id\":3}\n";
    for body in [sized(bad), chunked(bad.as_bytes(), 3)] {
        let reply = send_with(&client, post(&format!("{base}/"), "bad.jsonl", body)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
        assert!(
            reply.text().starts_with("line 3: not JSON"),
            "{}",
            reply.text()
        );
    }
    let reply = send(post(&format!("{base}/"), "array.jsonl", sized("[1,2]\n"))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.text().contains("line 1"), "{}", reply.text());
    // Past the first MiB of output the status is sent: a bad line breaks the reply off.
    let mut input = big().0.repeat(2);
    input.push_str("{\"id\":\n");
    crate::transformer_serve::send_expecting_abort(post(
        &format!("{base}/"),
        "late.jsonl",
        chunked(input.as_bytes(), 65_536),
    ))
    .await;
    // The same connection still serves.
    let reply = send_with(&client, get(&format!("{base}/health"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = send(get(&format!("{base}/nope"))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn hpull_fetches_and_masks() {
    let (_python, base) = start("hpull").await;
    let source = serve_object("people%2B1.jsonl", Bytes::from_static(INPUT.as_bytes())).await;
    let reply = send(pull(&base, &source.url, "people%2B1.jsonl")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), expected());
    let (input, output) = big();
    let source = serve_object("big.jsonl", Bytes::from(input)).await;
    let reply = send(pull(&base, &source.url, "big.jsonl")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(reply.body == output.as_bytes(), "the outputs differ");
    // The worker's endpoint does not answer: a retry may help.
    let closed = format!("http://127.0.0.1:{}/objects/x", free_port());
    let reply = send(pull(&base, &closed, "x")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
}

#[tokio::test]
async fn hrev_fetches_the_object_its_path_names_and_masks() {
    let (_python, base) = start("hrev").await;
    let source = serve_object("people%2B1.jsonl", Bytes::from_static(INPUT.as_bytes())).await;
    let reply = send(rev(&base, "/", "people%2B1.jsonl", &source.url)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), expected());
    // Without the object's URL the request is wrong; an unreadable source may be retried.
    let reply = send(get(&format!("{base}/people.jsonl"))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    let closed = format!("http://127.0.0.1:{}/objects/x", free_port());
    let reply = send(rev(&base, "/", "x", &closed)).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
}

fn run_io(input: &str, fields: Option<&str>) -> std::process::Output {
    let mut command = Command::new("python3");
    command
        .arg(mask_py())
        .args(["--comm", "io"])
        .env("MASK_SALT", SALT)
        .env("SLUICE_KEY", "people/1.jsonl")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match fields {
        Some(fields) => command.env("MASK_FIELDS", fields),
        None => command.env_remove("MASK_FIELDS"),
    };
    let mut child = command.spawn().expect("running python3");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    output
}

#[test]
fn io_masks_stdin_to_stdout() {
    let output = run_io(INPUT, None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8(output.stdout).unwrap(), expected());
    assert!(stderr.contains("key='people/1.jsonl'"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line per object: {stderr}");

    let (input, expected) = big();
    let output = run_io(&input, None);
    assert!(output.status.success());
    assert!(output.stdout == expected.as_bytes(), "the outputs differ");
}

#[test]
fn io_masks_every_field_named_and_fails_on_bad_lines() {
    let output = run_io(
        "{\"name\":\"Ada\",\"email\":null,\"id\":7}\n",
        Some("email, name"),
    );
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!(
            "{{\"name\":\"{}\",\"email\":null,\"id\":7}}\n",
            pseudonym("Ada")
        )
    );
    let output = run_io("{\"id\":1}\nnot json\n", None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 2: not JSON"), "{stderr}");
}
