//! `S3Storage` against a real S3 gateway: every `Storage` method, its error
//! paths, a fault-injecting proxy, and a volume server killed.
//!
//! These need the 3-node SeaweedFS cluster and the proxies that
//! `tests/s3_storage.sh` starts (scripts/seaweed.sh, tests/common/
//! faultproxy.py); it runs this binary with the endpoints in:
//!
//! | variable                      | what                                        |
//! |-------------------------------|---------------------------------------------|
//! | CBRFS_TEST_S3_ENDPOINT        | the gateway, `http://127.0.0.1:PORT`        |
//! | CBRFS_TEST_S3_BUCKET          | an existing bucket                          |
//! | AWS_ACCESS_KEY_ID/SECRET      | its credentials                             |
//! | CBRFS_TEST_S3_FLAKY_ENDPOINT  | the proxy failing requests at random        |
//! | CBRFS_TEST_S3_DEAD_ENDPOINT   | the proxy answering 503 to everything       |
//! | CBRFS_TEST_S3_STALL_ENDPOINT  | the proxy that never answers                |
//! | CBRFS_TEST_S3_KILL_VOLUME     | a shell command killing one volume server   |
//!
//! A plain `cargo test` lists them as ignored (they cannot run without a
//! cluster); `tests/s3_storage.sh` runs them with `--include-ignored`, and
//! one run without the variables fails saying which is missing. Every test works under its own prefix, so they run in parallel;
//! the volume-server test changes the cluster and runs alone, last.

mod common;

use cbrfs::error::Kind;
use cbrfs::store::s3::{RetryPolicy, S3Config, S3Storage};
use cbrfs::store::storage::{is_absent, Storage};
use std::io::Write;
use std::time::{Duration, Instant};
use url::Url;

fn var(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// The configuration of a fresh vault prefix `s3://BUCKET/t-NAME-PID-N`,
/// (always Some: a run without the cluster's variables fails here).
fn config(test: &str) -> Option<S3Config> {
    let (Some(endpoint), Some(bucket)) =
        (var("CBRFS_TEST_S3_ENDPOINT"), var("CBRFS_TEST_S3_BUCKET"))
    else {
        panic!(
            "{test}: CBRFS_TEST_S3_ENDPOINT and CBRFS_TEST_S3_BUCKET are not set: tests/s3_storage.sh runs this test with a cluster"
        );
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let loc = format!("s3://{bucket}/t-{test}-{}-{nanos}", std::process::id());
    let mut cfg = S3Config::from_env(&loc, Some(&endpoint)).expect("config from the environment");
    // Short backoff: the tests must be quick, the policy is the same code.
    cfg.retry = RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
    };
    Some(cfg)
}

fn storage(cfg: &S3Config) -> S3Storage {
    S3Storage::new(cfg.clone()).expect("S3Storage::new")
}

/// `cfg` with its requests sent to `endpoint_var`'s proxy instead.
fn via(cfg: &S3Config, endpoint_var: &str) -> S3Config {
    let mut c = cfg.clone();
    let e = var(endpoint_var).unwrap_or_else(|| panic!("{endpoint_var} is not set"));
    c.endpoint = Url::parse(&e).expect("proxy endpoint");
    c
}

fn temp_file(data: &[u8]) -> std::fs::File {
    let mut f = tempfile::tempfile().expect("tempfile");
    f.write_all(data).expect("write tempfile");
    f
}

fn names(s: &S3Storage, prefix: &str) -> Vec<(String, u64)> {
    let mut v: Vec<_> = s
        .list(prefix)
        .expect("list")
        .into_iter()
        .map(|o| (o.name, o.size))
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "needs the SeaweedFS cluster and proxies: tests/s3_storage.sh runs it"]
fn every_method_round_trips() {
    let Some(cfg) = config("methods") else { return };
    let s = storage(&cfg);
    assert!(s.describe().starts_with("s3://"), "{}", s.describe());
    assert!(s.describe().contains("/t-methods-"), "{}", s.describe());

    let data = common::pseudo_random(10_000, 1);
    s.put("index/aa.idx", &data).unwrap();
    s.put("backups/one.bk", b"record").unwrap();
    s.put("vault.json", b"{}").unwrap();
    assert_eq!(s.get("index/aa.idx").unwrap().as_deref(), Some(&data[..]));
    assert_eq!(
        s.get_range("index/aa.idx", 100, 50).unwrap(),
        &data[100..150]
    );
    assert_eq!(
        s.get_range("index/aa.idx", 9_990, 10).unwrap(),
        &data[9_990..]
    );
    assert_eq!(s.get_range("index/aa.idx", 10_000, 0).unwrap(), b"");

    // put overwrites: content-addressed names make a repeated PUT harmless.
    s.put("vault.json", b"{\"v\":2}").unwrap();
    assert_eq!(
        s.get("vault.json").unwrap().as_deref(),
        Some(&b"{\"v\":2}"[..])
    );

    // put_file below the multipart threshold: one PUT from the file.
    let pack = common::pseudo_random(300_000, 2);
    let f = temp_file(&pack);
    s.put_file("packs/ab/ab01.pack", &f, pack.len() as u64)
        .unwrap();
    assert_eq!(
        s.get("packs/ab/ab01.pack").unwrap().as_deref(),
        Some(&pack[..])
    );
    // Only `len` bytes of the file are published.
    s.put_file("packs/ab/ab02.pack", &f, 1000).unwrap();
    assert_eq!(
        s.get("packs/ab/ab02.pack").unwrap().as_deref(),
        Some(&pack[..1000])
    );

    assert_eq!(
        names(&s, ""),
        vec![
            ("backups/one.bk".to_string(), 6),
            ("index/aa.idx".to_string(), 10_000),
            ("packs/ab/ab01.pack".to_string(), 300_000),
            ("packs/ab/ab02.pack".to_string(), 1000),
            ("vault.json".to_string(), 7),
        ]
    );
    assert_eq!(names(&s, "packs/"), names(&s, "packs/ab/"));
    assert_eq!(
        names(&s, "index/"),
        vec![("index/aa.idx".to_string(), 10_000)]
    );
    assert!(names(&s, "nothing/").is_empty());

    s.delete("index/aa.idx").unwrap();
    assert_eq!(s.get("index/aa.idx").unwrap(), None);
    // Deleting what is absent is no error.
    s.delete("index/aa.idx").unwrap();
    s.delete("never/was").unwrap();
    assert!(names(&s, "index/").is_empty());

    let c = s.counters();
    assert!(c.put_requests >= 6, "{c:?}");
    assert!(c.get_requests >= 8, "{c:?}");
    assert!(c.list_requests >= 6, "{c:?}");
    assert!(c.delete_requests >= 3, "{c:?}");
    assert!(c.bytes_up >= (10_000 + 300_000 + 1000) as u64, "{c:?}");
    assert!(c.bytes_down >= (10_000 + 300_000 + 1000) as u64, "{c:?}");
}

#[test]
#[ignore = "needs the SeaweedFS cluster and proxies: tests/s3_storage.sh runs it"]
fn absent_objects_and_short_ranges_are_named_errors() {
    let Some(cfg) = config("absent") else { return };
    let s = storage(&cfg);
    assert_eq!(s.get("index/none.idx").unwrap(), None);

    // Absent, as the store tells it from damage (it re-lists then).
    let e = s.get_range("packs/00/none.pack", 0, 10).unwrap_err();
    assert!(is_absent(&e), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("packs/00/none.pack"), "{msg}");
    assert!(msg.contains(&cfg.location.bucket), "{msg}");
    let e = s.get_range("packs/00/none.pack", 0, 0).unwrap_err();
    assert!(is_absent(&e), "{e}");

    s.put("packs/00/short.pack", &common::pseudo_random(100, 3))
        .unwrap();
    for (offset, len) in [(90, 20), (100, 1), (200, 10), (101, 0)] {
        let e = s.get_range("packs/00/short.pack", offset, len).unwrap_err();
        assert_eq!(e.kind(), Kind::Corrupt, "{offset}+{len}: {e}");
        let msg = e.to_string();
        assert!(msg.contains("packs/00/short.pack"), "{msg}");
        assert!(msg.contains("100 bytes"), "{offset}+{len}: {msg}");
    }
    let e = s.get_range("packs/00/short.pack", u64::MAX, 2).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");

    // Names that could escape the prefix are refused before any request.
    let before = s.counters();
    for bad in ["", "/vault.json", "../x", "a//b", "a/./b"] {
        let e = s.put(bad, b"x").unwrap_err();
        assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
    }
    assert_eq!(s.counters(), before);
}

#[test]
#[ignore = "needs the SeaweedFS cluster and proxies: tests/s3_storage.sh runs it"]
fn a_missing_bucket_and_wrong_keys_are_clear_errors() {
    let Some(cfg) = config("bucket") else { return };
    let mut c = cfg.clone();
    c.location = cbrfs::store::s3::S3Location::parse("s3://cbrfs-no-such-bucket/x").unwrap();
    let missing = storage(&c);
    for e in [
        missing.get("vault.json").unwrap_err(),
        missing.put("vault.json", b"{}").unwrap_err(),
    ] {
        assert_eq!(e.kind(), Kind::NotFound, "{e}");
        assert!(
            e.to_string()
                .contains("bucket cbrfs-no-such-bucket does not exist"),
            "{e}"
        );
        assert!(e.to_string().contains("vault.json"), "{e}");
    }

    let wrong = S3Config::from_lookup(
        &cfg.location.to_string(),
        Some(cfg.endpoint.as_str().trim_end_matches('/')),
        |k| match k {
            "AWS_ACCESS_KEY_ID" => Some("cbrfsnosuchkey".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("wrongsecretvalue".into()),
            _ => None,
        },
    )
    .unwrap();
    let start = Instant::now();
    let e = storage(&wrong).get("vault.json").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("403"), "{msg}");
    assert!(!msg.contains("wrongsecretvalue"), "{msg}");
    // Refused at once: a 403 is not retried.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
#[ignore = "needs the SeaweedFS cluster and proxies: tests/s3_storage.sh runs it"]
fn list_follows_continuation_tokens_past_1000() {
    let Some(cfg) = config("list") else { return };
    let s = storage(&cfg);
    const N: usize = 1_100;
    std::thread::scope(|scope| {
        for t in 0..8 {
            let s = &s;
            scope.spawn(move || {
                for i in (t..N).step_by(8) {
                    s.put(&format!("index/{i:05}.idx"), format!("{i}").as_bytes())
                        .expect("put");
                }
            });
        }
    });
    // A neighbour whose name shares the prefix's first letters is not listed.
    s.put("indexes/other", b"x").unwrap();
    let before = s.counters();
    let got = names(&s, "index/");
    assert_eq!(got.len(), N);
    for (i, (name, size)) in got.iter().enumerate() {
        assert_eq!(name, &format!("index/{i:05}.idx"));
        assert_eq!(*size, format!("{i}").len() as u64);
    }
    let pages = s.counters().since(&before).list_requests;
    assert!(pages >= 2, "{N} keys listed in {pages} request(s)");
}

#[test]
#[ignore = "needs the SeaweedFS cluster and proxies: tests/s3_storage.sh runs it"]
fn prefixes_keep_vaults_apart() {
    let Some(a_cfg) = config("prefix") else {
        return;
    };
    let mut b_cfg = a_cfg.clone();
    b_cfg.location.prefix = format!("{}b/", a_cfg.location.prefix);
    let mut root_cfg = a_cfg.clone();
    root_cfg.location.prefix = String::new();
    let (a, b, root) = (storage(&a_cfg), storage(&b_cfg), storage(&root_cfg));

    a.put("vault.json", b"a").unwrap();
    b.put("vault.json", b"b").unwrap();
    assert_eq!(a.get("vault.json").unwrap().as_deref(), Some(&b"a"[..]));
    assert_eq!(b.get("vault.json").unwrap().as_deref(), Some(&b"b"[..]));
    // A vault nested in another's prefix shows up in the outer one's list
    // under its own names: the layout stays one vault per prefix.
    assert_eq!(names(&b, ""), vec![("vault.json".to_string(), 1)]);
    // The key in the bucket is the prefix followed by the store's name.
    let key = format!("{}vault.json", a_cfg.location.prefix);
    assert_eq!(root.get(&key).unwrap().as_deref(), Some(&b"a"[..]));
    assert!(names(&root, &a_cfg.location.prefix)
        .iter()
        .any(|(n, _)| n == &format!("{}b/vault.json", a_cfg.location.prefix)));
}

#[test]
#[ignore = "needs the SeaweedFS cluster and proxies: tests/s3_storage.sh runs it"]
fn multipart_uploads_are_checked_and_whole() {
    let Some(mut cfg) = config("multipart") else {
        return;
    };
    cfg.multipart_threshold = 5 << 20;
    cfg.part_size = 5 << 20;
    let s = storage(&cfg);
    let data = common::pseudo_random((12 << 20) + 1234, 4);
    let f = temp_file(&data);
    let before = s.counters();
    s.put_file("packs/cd/big.pack", &f, data.len() as u64)
        .unwrap();
    let spent = s.counters().since(&before);
    // create, 3 parts, complete (+ retries if any).
    assert!(spent.put_requests >= 5, "{spent:?}");
    assert!(spent.bytes_up >= data.len() as u64, "{spent:?}");
    assert_eq!(
        names(&s, "packs/"),
        vec![("packs/cd/big.pack".to_string(), data.len() as u64)]
    );
    assert!(s.get("packs/cd/big.pack").unwrap().as_deref() == Some(&data[..]));
    // A range across the first part boundary.
    let at = (5 << 20) - 100;
    assert_eq!(
        s.get_range("packs/cd/big.pack", at, 300).unwrap(),
        &data[at as usize..at as usize + 300]
    );

    // A file shorter than the length given fails, and publishes nothing.
    let short = temp_file(&data[..(6 << 20)]);
    let e = s
        .put_file("packs/cd/short.pack", &short, data.len() as u64)
        .unwrap_err();
    assert!(e.to_string().contains("short.pack"), "{e}");
    assert_eq!(s.get("packs/cd/short.pack").unwrap(), None);
}

#[test]
#[ignore = "needs the SeaweedFS cluster and proxies: tests/s3_storage.sh runs it"]
fn random_faults_are_retried_to_success() {
    let Some(cfg) = config("flaky") else { return };
    let flaky = storage(&via(&cfg, "CBRFS_TEST_S3_FLAKY_ENDPOINT"));
    let direct = storage(&cfg);
    let mut written = Vec::new();
    for i in 0..40u64 {
        let data = common::pseudo_random(20_000 + i as usize * 100, 10 + i);
        let name = format!("packs/{:02x}/{i}.pack", i % 4);
        if i % 2 == 0 {
            flaky.put(&name, &data).unwrap();
        } else {
            flaky
                .put_file(&name, &temp_file(&data), data.len() as u64)
                .unwrap();
        }
        written.push((name, data));
    }
    for (name, data) in &written {
        // Written through the proxy, read directly and through it: exact.
        assert!(
            direct.get(name).unwrap().as_deref() == Some(&data[..]),
            "{name}"
        );
        assert!(
            flaky.get(name).unwrap().as_deref() == Some(&data[..]),
            "{name}"
        );
        assert_eq!(flaky.get_range(name, 7, 1000).unwrap(), &data[7..1007]);
    }
    assert_eq!(names(&flaky, "packs/").len(), written.len());
    for (name, _) in &written {
        flaky.delete(name).unwrap();
    }
    assert!(names(&direct, "packs/").is_empty());
    let c = flaky.counters();
    // 200+ requests at p = 0.2: faults were met and got through.
    assert!(c.retries > 5, "{c:?}");
}

#[test]
#[ignore = "needs the SeaweedFS cluster and proxies: tests/s3_storage.sh runs it"]
fn an_outage_ends_in_bounded_time_with_a_clear_error() {
    let Some(mut cfg) = config("outage") else {
        return;
    };
    cfg.retry = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
    };
    let dead_cfg = via(&cfg, "CBRFS_TEST_S3_DEAD_ENDPOINT");
    let dead = storage(&dead_cfg);
    let start = Instant::now();
    let e = dead.put("index/ff.idx", b"x").unwrap_err();
    let took = start.elapsed();
    let msg = e.to_string();
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(e.exit_code(), 1, "{msg}");
    assert!(msg.contains("index/ff.idx"), "{msg}");
    assert!(msg.contains(&cfg.location.bucket), "{msg}");
    assert!(
        msg.contains(dead_cfg.endpoint.as_str().trim_end_matches('/')),
        "{msg}"
    );
    assert!(msg.contains("4 attempts"), "{msg}");
    assert!(msg.contains("503"), "{msg}");
    assert_eq!(dead.counters().put_requests, 4);
    assert_eq!(dead.counters().retries, 3);
    for r in [
        dead.get("x").map(|_| ()),
        dead.list("index/").map(|_| ()),
        dead.delete("x"),
    ] {
        assert!(r
            .unwrap_err()
            .to_string()
            .contains("gave up after 4 attempts"));
    }
}

#[test]
#[ignore = "needs the SeaweedFS cluster and proxies: tests/s3_storage.sh runs it"]
fn a_stalled_server_times_out() {
    let Some(mut cfg) = config("stall") else {
        return;
    };
    cfg.retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(10),
    };
    cfg.io_timeout = Duration::from_secs(1);
    let stalled = storage(&via(&cfg, "CBRFS_TEST_S3_STALL_ENDPOINT"));
    let start = Instant::now();
    let e = stalled.get("vault.json").unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(e.to_string().contains("timed out"), "{e}");
    assert!(e.to_string().contains("vault.json"), "{e}");
}

/// Runs alone, after the others (tests/s3_storage.sh): it kills a volume
/// server, and every object is on all three (replication 002).
#[test]
#[ignore = "needs the SeaweedFS cluster and proxies: tests/s3_storage.sh runs it"]
fn reads_survive_a_volume_server_down() {
    let Some(cfg) = config("volume") else { return };
    let Some(kill) = var("CBRFS_TEST_S3_KILL_VOLUME") else {
        panic!("CBRFS_TEST_S3_KILL_VOLUME is not set: tests/s3_storage.sh runs this test with a cluster");
    };
    let s = storage(&cfg);
    let mut written = Vec::new();
    for i in 0..20u64 {
        let data = common::pseudo_random(50_000, 100 + i);
        let name = format!("packs/ee/{i}.pack");
        s.put(&name, &data).unwrap();
        written.push((name, data));
    }
    let st = std::process::Command::new("bash")
        .arg("-c")
        .arg(&kill)
        .status()
        .expect("run the kill command");
    assert!(st.success(), "{kill}: {st}");
    for (name, data) in &written {
        assert!(s.get(name).unwrap().as_deref() == Some(&data[..]), "{name}");
        assert_eq!(s.get_range(name, 1000, 2000).unwrap(), &data[1000..3000]);
    }
    assert_eq!(names(&s, "packs/").len(), written.len());
    // Writes may fail while a replica is missing (002 wants all three);
    // either way the answer is a result, not a hang. One attempt: the
    // gateway takes ~30 s to give up on the dead replica (measured), and
    // the retries are tested elsewhere.
    let mut one = cfg.clone();
    one.retry.max_attempts = 1;
    let start = Instant::now();
    let w = storage(&one).put("packs/ee/after.pack", b"after");
    eprintln!(
        "note: a write with one volume server down: {} in {:?}",
        match &w {
            Ok(()) => "succeeded".to_string(),
            Err(e) => format!("failed: {e}"),
        },
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "{:?}",
        start.elapsed()
    );
    if w.is_ok() {
        assert_eq!(
            s.get("packs/ee/after.pack").unwrap().as_deref(),
            Some(&b"after"[..])
        );
    }
}
