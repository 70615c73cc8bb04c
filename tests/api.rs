//! Issue 6, "Done when" 1: the storage API against a 3-node cluster.
//!
//! [`every_endpoint_and_its_errors`] calls every documented operation through
//! real sheep over HTTP, with good and bad input (unknown VDI, bad size,
//! duplicate name, malformed JSON, unknown fields, bad names and tags), and
//! checks each answer's status, error code and body against
//! `docs/openapi.json`; it also checks that the server serves that very file
//! and that unknown routes and methods get JSON errors.
//! [`idempotent_and_concurrent_calls`] repeats creates and deletes with one
//! `Idempotency-Key` through different nodes, reuses a key for another
//! request, and runs concurrent creates of one name and of many names.

use serde_json::{json, Value};
use sheepfold_tests::api::{check_schema, openapi, response_schema, seg, Answer, Api};
use sheepfold_tests::cluster::Cluster;

fn cluster() -> Cluster {
    let c = Cluster::builder().nodes(3).distinct_zones().start();
    c.format(2);
    c
}

/// Sends, checks the status, and checks the body against the documented
/// schema for that status.
fn call(
    api: &Api,
    doc: &Value,
    method: &str,
    template: &str,
    path: &str,
    body: Option<&str>,
    want: u16,
) -> Answer {
    let a = api.send(method, path, body, None);
    assert_eq!(
        a.status, want,
        "{method} {path} {body:?}: want {want}, got {}: {}",
        a.status, a.text
    );
    if let Some(schema) = response_schema(doc, method, template, want) {
        check_schema(doc, &schema, &a.json, "$").unwrap_or_else(|e| {
            panic!(
                "{method} {path}: answer does not match the OpenAPI schema: {e}\n{}",
                a.text
            )
        });
    }
    a
}

fn expect_error(a: &Answer, code: &str) {
    assert_eq!(
        a.code(),
        code,
        "want error {code}, got {}: {}",
        a.status,
        a.text
    );
    assert!(
        !a.json["error"]["message"].as_str().unwrap_or("").is_empty(),
        "error without a message: {}",
        a.text
    );
}

#[test]
fn every_endpoint_and_its_errors() {
    let c = cluster();
    let doc = openapi();
    let a0 = Api::new(c.http_port(0));
    let a1 = Api::new(c.http_port(1));
    let a2 = Api::new(c.http_port(2));

    // The server serves the repository's OpenAPI file.
    let served = call(
        &a0,
        &doc,
        "GET",
        "/v1/openapi.json",
        "/v1/openapi.json",
        None,
        200,
    );
    assert_eq!(
        served.json, doc,
        "served OpenAPI differs from docs/openapi.json"
    );

    // Cluster and nodes.
    let cl = call(&a1, &doc, "GET", "/v1/cluster", "/v1/cluster", None, 200).json;
    assert_eq!(cl["status"], "running");
    assert_eq!(cl["copies"], 2);
    assert_eq!(cl["nodes"].as_array().unwrap().len(), 3);
    assert!(cl["capacity"]["total"].as_u64().unwrap() > 0);
    for n in cl["nodes"].as_array().unwrap() {
        assert_eq!(n["status"], "running", "{n}");
        let port = n["http_port"].as_u64().unwrap() as u16;
        assert!((0..3).any(|i| c.http_port(i) == port), "{n}");
    }
    let nodes = call(&a2, &doc, "GET", "/v1/nodes", "/v1/nodes", None, 200).json;
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 3);
    let me = call(&a2, &doc, "GET", "/v1/node", "/v1/node", None, 200).json;
    assert_eq!(me["addr"], format!("127.0.0.1:{}", c.port(2)));
    assert_eq!(me["nbd_port"], c.nbd_port(2));

    // Create, with every kind of bad input first.
    let create = |api: &Api, body: &str, want: u16| {
        call(api, &doc, "POST", "/v1/vdis", "/v1/vdis", Some(body), want)
    };
    expect_error(
        &create(&a0, "{\"name\": \"base\", \"size\": ", 400),
        "bad_request",
    );
    expect_error(&create(&a0, "[1, 2]", 400), "bad_request");
    expect_error(&create(&a0, r#"{"name": "base"}"#, 400), "bad_request");
    expect_error(
        &create(
            &a0,
            r#"{"name": "base", "size": "1G", "colour": "red"}"#,
            400,
        ),
        "bad_request",
    );
    for size in [
        r#"0"#, r#"1000"#, r#""12Q""#, r#"-512"#, r#""99T""#, r#"null"#,
    ] {
        let body = format!(r#"{{"name": "base", "size": {size}}}"#);
        expect_error(&create(&a0, &body, 400), "bad_size");
    }
    for name in ["", "a@b", "a/b"] {
        let body = json!({"name": name, "size": "1G"}).to_string();
        expect_error(&create(&a0, &body, 400), "bad_name");
    }
    let long = json!({"name": "x".repeat(300), "size": "1G"}).to_string();
    expect_error(&create(&a0, &long, 400), "bad_name");
    let body = json!({"name": "base", "size": "64M", "copies": 0}).to_string();
    expect_error(&create(&a0, &body, 400), "bad_request");

    let base = create(&a0, r#"{"name": "base", "size": "64M"}"#, 201).json;
    assert_eq!(base["name"], "base");
    assert_eq!(base["size"], 64u64 << 20);
    assert_eq!(base["copies"], 2);
    let xml = base["disk"]["nbd"].as_str().unwrap();
    assert!(xml.contains("protocol='nbd' name='base'"), "{xml}");
    assert!(xml.contains(&format!("port='{}'", c.nbd_port(0))), "{xml}");
    let sxml = base["disk"]["sheepdog"].as_str().unwrap();
    assert!(sxml.contains(&format!("port='{}'", c.port(0))), "{sxml}");
    // Duplicate name, through another node.
    expect_error(
        &create(&a1, r#"{"name": "base", "size": "64M"}"#, 409),
        "vdi_exists",
    );

    // List and show, through every node.
    for api in [&a0, &a1, &a2] {
        let list = call(api, &doc, "GET", "/v1/vdis", "/v1/vdis", None, 200).json;
        let names: Vec<&str> = list["vdis"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["base"]);
    }
    call(
        &a2,
        &doc,
        "GET",
        "/v1/vdis/{name}",
        "/v1/vdis/base",
        None,
        200,
    );
    let missing = call(
        &a2,
        &doc,
        "GET",
        "/v1/vdis/{name}",
        "/v1/vdis/nope",
        None,
        404,
    );
    expect_error(&missing, "no_vdi");

    // Resize: grow; shrinking, bad sizes and unknown VDIs are refused.
    let resize = |api: &Api, name: &str, body: &str, want: u16| {
        let path = format!("/v1/vdis/{}/resize", seg(name));
        call(
            api,
            &doc,
            "POST",
            "/v1/vdis/{name}/resize",
            &path,
            Some(body),
            want,
        )
    };
    let grown = resize(&a1, "base", r#"{"size": "128M"}"#, 200).json;
    assert_eq!(grown["size"], 128u64 << 20);
    expect_error(&resize(&a1, "base", r#"{"size": "64M"}"#, 400), "bad_size");
    expect_error(&resize(&a1, "base", r#"{"size": 777}"#, 400), "bad_size");
    expect_error(&resize(&a1, "base", r#"{"size": "5T"}"#, 400), "bad_size");
    expect_error(&resize(&a1, "base", r#"{"size": "1G""#, 400), "bad_request");
    expect_error(&resize(&a1, "nope", r#"{"size": "1G"}"#, 404), "no_vdi");

    // Snapshots.
    let snap = |api: &Api, name: &str, body: &str, want: u16| {
        let path = format!("/v1/vdis/{}/snapshots", seg(name));
        call(
            api,
            &doc,
            "POST",
            "/v1/vdis/{name}/snapshots",
            &path,
            Some(body),
            want,
        )
    };
    let gold = snap(&a2, "base", r#"{"tag": "gold"}"#, 201).json;
    assert_eq!(
        (gold["vdi"].as_str(), gold["tag"].as_str()),
        (Some("base"), Some("gold"))
    );
    assert!(gold["disk"]["nbd"]
        .as_str()
        .unwrap()
        .contains("name='base@gold'"));
    expect_error(
        &snap(&a0, "base", r#"{"tag": "gold"}"#, 409),
        "snapshot_exists",
    );
    expect_error(&snap(&a0, "base", r#"{"tag": ""}"#, 400), "bad_request");
    expect_error(&snap(&a0, "base", r#"{"tag": "12"}"#, 400), "bad_request");
    expect_error(&snap(&a0, "base", r#"{"tags": "x"}"#, 400), "bad_request");
    expect_error(&snap(&a0, "nope", r#"{"tag": "x"}"#, 404), "no_vdi");
    let shown = call(
        &a1,
        &doc,
        "GET",
        "/v1/vdis/{name}",
        "/v1/vdis/base",
        None,
        200,
    )
    .json;
    assert_eq!(shown["snapshots"][0]["tag"], "gold");
    assert_eq!(shown["parent"]["snapshot"], "gold");

    // Clones.
    let clone = |api: &Api, src: &str, tag: &str, body: &str, want: u16| {
        let path = format!("/v1/vdis/{}/snapshots/{}/clones", seg(src), seg(tag));
        let t = "/v1/vdis/{name}/snapshots/{tag}/clones";
        call(api, &doc, "POST", t, &path, Some(body), want)
    };
    let vm1 = clone(&a1, "base", "gold", r#"{"name": "vm1"}"#, 201).json;
    assert_eq!(vm1["parent"], json!({"name": "base", "snapshot": "gold"}));
    assert_eq!(vm1["size"], 128u64 << 20);
    let big = clone(&a2, "base", "gold", r#"{"name": "vm2", "size": "1G"}"#, 201).json;
    assert_eq!(big["size"], 1u64 << 30);
    expect_error(
        &clone(&a0, "base", "gold", r#"{"name": "vm1"}"#, 409),
        "vdi_exists",
    );
    expect_error(
        &clone(&a0, "base", "nosuch", r#"{"name": "vm3"}"#, 404),
        "no_snapshot",
    );
    expect_error(
        &clone(&a0, "nope", "gold", r#"{"name": "vm3"}"#, 404),
        "no_vdi",
    );
    expect_error(
        &clone(
            &a0,
            "base",
            "gold",
            r#"{"name": "vm3", "size": "64M"}"#,
            400,
        ),
        "bad_size",
    );
    expect_error(
        &clone(&a0, "base", "gold", r#"{"name": "a@b"}"#, 400),
        "bad_name",
    );
    expect_error(&clone(&a0, "base", "gold", "{", 400), "bad_request");

    // Attachments.
    let attach = |api: &Api, name: &str, body: &str, want: u16| {
        let path = format!("/v1/vdis/{}/attachments", seg(name));
        call(
            api,
            &doc,
            "POST",
            "/v1/vdis/{name}/attachments",
            &path,
            Some(body),
            want,
        )
    };
    let att = attach(&a0, "vm1", r#"{"host": "hv-a"}"#, 201).json;
    let id = att["id"].as_str().unwrap().to_string();
    assert_eq!(
        (att["mode"].as_str(), att["state"].as_str()),
        (Some("rw"), Some("active"))
    );
    assert_eq!(att["nbd"]["port"], c.nbd_port(0));
    assert_eq!(att["nbd"]["export"], format!("vm1@{id}"));
    let locked = attach(&a1, "vm1", r#"{"host": "hv-b"}"#, 409);
    expect_error(&locked, "locked");
    assert!(
        locked.text.contains("hv-a"),
        "the refusal names the holder: {}",
        locked.text
    );
    let ro = attach(&a2, "vm1", r#"{"host": "backup", "mode": "ro"}"#, 201).json;
    assert_eq!(ro["mode"], "ro");
    expect_error(
        &attach(&a1, "vm1", r#"{"host": "hv-b", "mode": "rx"}"#, 400),
        "bad_request",
    );
    expect_error(&attach(&a1, "vm1", r#"{"host": ""}"#, 400), "bad_request");
    expect_error(&attach(&a1, "vm1", "{\"host\": 3}", 400), "bad_request");
    expect_error(&attach(&a1, "nope", r#"{"host": "hv-b"}"#, 404), "no_vdi");
    let bad_from = attach(
        &a1,
        "vm1",
        r#"{"host": "hv-b", "migrate_from": "a-0000000000000000"}"#,
        404,
    );
    expect_error(&bad_from, "not_locked");
    let listed = call(
        &a1,
        &doc,
        "GET",
        "/v1/vdis/{name}/attachments",
        "/v1/vdis/vm1/attachments",
        None,
        200,
    )
    .json;
    assert_eq!(listed["attachments"].as_array().unwrap().len(), 2);
    let missing = call(
        &a1,
        &doc,
        "GET",
        "/v1/vdis/{name}/attachments",
        "/v1/vdis/nope/attachments",
        None,
        404,
    );
    expect_error(&missing, "no_vdi");
    let locks = call(&a2, &doc, "GET", "/v1/locks", "/v1/locks", None, 200).json;
    assert_eq!(locks["attachments"].as_array().unwrap().len(), 2);
    let dog_locks = c.dog_ok(1, &["vdi", "lock", "list"]);
    assert!(
        dog_locks.contains(&format!("host=hv-a id={id} rw")),
        "{dog_locks}"
    );
    assert!(dog_locks.contains("host=backup"), "{dog_locks}");

    // Deleting an attached VDI is refused; detach, then delete.
    let del =
        |api: &Api, t: &str, path: &str, want: u16| call(api, &doc, "DELETE", t, path, None, want);
    expect_error(&del(&a2, "/v1/vdis/{name}", "/v1/vdis/vm1", 409), "locked");
    let detach_t = "/v1/vdis/{name}/attachments/{id}";
    let d = del(
        &a1,
        detach_t,
        &format!("/v1/vdis/vm1/attachments/{id}"),
        200,
    )
    .json;
    assert_eq!(d["attachments"].as_array().unwrap().len(), 1);
    expect_error(
        &del(
            &a1,
            detach_t,
            &format!("/v1/vdis/vm1/attachments/{id}"),
            404,
        ),
        "not_locked",
    );
    let ro_id = ro["id"].as_str().unwrap();
    del(
        &a0,
        detach_t,
        &format!("/v1/vdis/vm1/attachments/{ro_id}"),
        200,
    );
    let vid = del(&a2, "/v1/vdis/{name}", "/v1/vdis/vm1", 200).json["vid"].clone();
    assert_eq!(vid, vm1["vid"]);
    expect_error(&del(&a2, "/v1/vdis/{name}", "/v1/vdis/vm1", 404), "no_vdi");

    // Snapshot delete: the clone keeps working.
    let snap_t = "/v1/vdis/{name}/snapshots/{tag}";
    expect_error(
        &del(&a0, snap_t, "/v1/vdis/base/snapshots/nosuch", 404),
        "no_snapshot",
    );
    expect_error(
        &del(&a0, snap_t, "/v1/vdis/nope/snapshots/gold", 404),
        "no_vdi",
    );
    let gone = del(&a0, snap_t, "/v1/vdis/base/snapshots/gold", 200).json;
    assert_eq!(gone["snapshot"], "gold");
    call(
        &a0,
        &doc,
        "GET",
        "/v1/vdis/{name}",
        "/v1/vdis/vm2",
        None,
        200,
    );

    // Unknown routes and methods are JSON errors too.
    let a = a0.get("/v1/nothing");
    assert_eq!(a.status, 404);
    expect_error(&a, "not_found");
    let a = a0.send("PUT", "/v1/vdis", Some("{}"), None);
    assert_eq!(a.status, 405);
    expect_error(&a, "method_not_allowed");

    // /metrics answers in Prometheus text format.
    let m = a1.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.text.contains("sheepfold_node_capacity_bytes"),
        "{}",
        m.text
    );
    for i in 0..3 {
        c.assert_no_panic(i);
    }
}

#[test]
fn idempotent_and_concurrent_calls() {
    let c = cluster();
    let apis: Vec<Api> = (0..3).map(|i| Api::new(c.http_port(i))).collect();

    // A create repeated with its key, through another node, is answered
    // from the record: same body, marked as a replay, nothing new made.
    let body = json!({"name": "idem", "size": "64M"});
    let first = apis[0].post_key("/v1/vdis", &body, "create-idem-1");
    assert_eq!(first.status, 201, "{}", first.text);
    assert!(!first.replayed);
    let again = apis[2].post_key("/v1/vdis", &body, "create-idem-1");
    assert_eq!(again.status, 201, "{}", again.text);
    assert!(again.replayed);
    assert_eq!(again.json, first.json);
    // Without the key the same create is a duplicate.
    assert_eq!(apis[1].post("/v1/vdis", &body).code(), "vdi_exists");
    // The same key for another request is refused.
    let other = json!({"name": "idem2", "size": "64M"});
    let conflict = apis[1].post_key("/v1/vdis", &other, "create-idem-1");
    assert_eq!(
        (conflict.status, conflict.code()),
        (422, "idempotency_conflict")
    );
    // A client error is recorded too: the repeat gets the same refusal.
    let dup = apis[1].post_key("/v1/vdis", &body, "create-idem-dup");
    assert_eq!(dup.code(), "vdi_exists");
    let dup2 = apis[0].post_key("/v1/vdis", &body, "create-idem-dup");
    assert!(dup2.replayed && dup2.code() == "vdi_exists");

    // Deletes: the repeat returns the first answer, not no_vdi.
    let d1 = apis[1].delete_key("/v1/vdis/idem", "delete-idem-1");
    assert_eq!(d1.status, 200, "{}", d1.text);
    let d2 = apis[2].delete_key("/v1/vdis/idem", "delete-idem-1");
    assert!(
        d2.replayed && d2.status == 200 && d2.json == d1.json,
        "{}",
        d2.text
    );
    assert_eq!(apis[0].delete("/v1/vdis/idem").code(), "no_vdi");

    // Concurrent creates of one name through all nodes: exactly one wins.
    let results: Vec<Answer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let api = apis[i % 3].clone();
                s.spawn(move || api.post("/v1/vdis", &json!({"name": "race", "size": "16M"})))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won = results.iter().filter(|a| a.status == 201).count();
    let lost = results.iter().filter(|a| a.code() == "vdi_exists").count();
    assert_eq!((won, lost), (1, 5), "{results:?}");

    // Concurrent creates of different names all succeed, and the same
    // request repeated concurrently on one node with one key runs once.
    std::thread::scope(|s| {
        for i in 0..8 {
            let api = apis[i % 3].clone();
            s.spawn(move || {
                let a = api.post(
                    "/v1/vdis",
                    &json!({"name": format!("many{i}"), "size": "16M"}),
                );
                assert_eq!(a.status, 201, "{}", a.text);
            });
        }
    });
    let same: Vec<Answer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let api = apis[1].clone();
                s.spawn(move || {
                    api.post_key(
                        "/v1/vdis",
                        &json!({"name": "once", "size": "16M"}),
                        "k-once",
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(same.iter().all(|a| a.status == 201), "{same:?}");
    assert_eq!(same.iter().filter(|a| !a.replayed).count(), 1, "{same:?}");
    let list = apis[2].get("/v1/vdis").json;
    assert_eq!(list["vdis"].as_array().unwrap().len(), 10, "{list}");
    for i in 0..3 {
        c.assert_no_panic(i);
    }
}
