//! A cloud panel's storage driver for Sheepfold, complete and small: it
//! drives only the HTTP storage API (and `qemu-img` for the data, as
//! OpenNebula's and Proxmox's drivers do).
//!
//! It imports a base image, snapshots it, provisions VM disks by cloning the
//! snapshot and attaching each clone on a host, prints the libvirt `<disk>`
//! XML a panel pastes into each domain, and tears everything down, timing
//! each step.
//!
//! ```text
//! cargo run -p sheepfold-tests --example panel_driver -- \
//!     [--api http://127.0.0.1:7080] [--image disk.raw | --size 1G] [--vms 10] [--quiet]
//! ```
//!
//! `--quiet` prints only the first VM's XML. Timings are in milliseconds.
//!
//! Without `--image` it imports a generated raw image of `--size` bytes.
//! Every change carries an `Idempotency-Key`, so a driver that times out
//! can simply send the same request again.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// What went wrong, for the operator.
type Error = Box<dyn std::error::Error>;

struct Options {
    api: String,
    image: Option<String>,
    size: u64,
    vms: usize,
    quiet: bool,
}

fn parse_args() -> Result<Options, Error> {
    let mut o = Options {
        api: "http://127.0.0.1:7080".into(),
        image: None,
        size: 256 << 20,
        vms: 10,
        quiet: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--api" => o.api = value()?,
            "--image" => o.image = Some(value()?),
            "--size" => o.size = parse_size(&value()?)?,
            "--vms" => o.vms = value()?.parse()?,
            "--quiet" => o.quiet = true,
            "-h" | "--help" => {
                println!(
                    "panel_driver [--api URL] [--image RAW | --size N[KMG]] [--vms N] [--quiet]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(o)
}

fn parse_size(s: &str) -> Result<u64, Error> {
    let (n, shift) = match s.chars().last() {
        Some('K') => (&s[..s.len() - 1], 10),
        Some('M') => (&s[..s.len() - 1], 20),
        Some('G') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    Ok(n.parse::<u64>()? << shift)
}

/// The storage API of one sheep.
struct Storage {
    base: String,
    agent: ureq::Agent,
    run: u64,
    seq: std::sync::atomic::AtomicU64,
}

impl Storage {
    fn new(base: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        Storage {
            base: base.trim_end_matches('/').to_string(),
            agent,
            run: std::process::id().into(),
            seq: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Sends a request; any answer but `want` is an error carrying the
    /// API's code and message.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        want: u16,
    ) -> Result<Value, Error> {
        let url = format!("{}{path}", self.base);
        // One key per logical request: a retry of this call would reuse it.
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = format!("panel-{}-{seq}", self.run);
        let mut resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).call()?,
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Idempotency-Key", &key)
                .call()?,
            (_, body) => self
                .agent
                .post(&url)
                .header("Idempotency-Key", &key)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(Value::Null).to_string())?,
        };
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string()?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status != want {
            return Err(format!(
                "{method} {path}: {status} {}: {}",
                v["error"]["code"].as_str().unwrap_or("?"),
                v["error"]["message"].as_str().unwrap_or(&text)
            )
            .into());
        }
        Ok(v)
    }
}

/// The NBD address in a libvirt `<disk>`: (host, port, export).
fn nbd_address(xml: &str) -> Result<(String, String, String), Error> {
    let attr = |tag: &str, name: &str| -> Result<String, Error> {
        let el = xml
            .split(&format!("<{tag} "))
            .nth(1)
            .ok_or(format!("no <{tag}> in the XML"))?;
        let v = el
            .split(&format!("{name}='"))
            .nth(1)
            .and_then(|v| v.split('\'').next())
            .ok_or(format!("no {name} on <{tag}>"))?;
        Ok(v.replace("&apos;", "'").replace("&amp;", "&"))
    };
    Ok((
        attr("host", "name")?,
        attr("host", "port")?,
        attr("source", "name")?,
    ))
}

/// Writes a raw image into an attachment's NBD export with qemu-img.
fn import(image: &str, xml: &str) -> Result<(), Error> {
    let (host, port, export) = nbd_address(xml)?;
    let target = json!({"driver": "raw", "file": {"driver": "nbd",
        "server": {"type": "inet", "host": host, "port": port}, "export": export}});
    let out = Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw", image])
        .arg(format!("json:{target}"))
        .output()?;
    if !out.status.success() {
        return Err(format!("qemu-img convert: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

/// Times steps and prints a table at the end.
struct Clock(Vec<(String, Duration)>);

impl Clock {
    fn time<T>(&mut self, step: &str, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        let start = Instant::now();
        let r = f()?;
        self.0.push((step.to_string(), start.elapsed()));
        Ok(r)
    }
}

fn main() -> Result<(), Error> {
    let o = parse_args()?;
    let api = Storage::new(&o.api);
    let mut clock = Clock(Vec::new());
    let cluster = api.call("GET", "/v1/cluster", None, 200)?;
    println!(
        "cluster: {}, {} nodes, {} copies, {} GiB free",
        cluster["status"].as_str().unwrap_or("?"),
        cluster["nodes"].as_array().map_or(0, Vec::len),
        cluster["copies"],
        cluster["capacity"]["free"].as_u64().unwrap_or(0) >> 30
    );

    // The image to import: given, or generated (a raw file of random data).
    let generated;
    let image = match &o.image {
        Some(p) => p.clone(),
        None => {
            generated = std::env::temp_dir().join(format!("panel-base-{}.raw", api.run));
            let mut f = std::fs::File::create(&generated)?;
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut chunk = vec![0u8; 1 << 20];
            for _ in 0..(o.size >> 20) {
                for b in chunk.chunks_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b.copy_from_slice(&x.to_le_bytes());
                }
                f.write_all(&chunk)?;
            }
            generated.to_string_lossy().into_owned()
        }
    };
    let size = std::fs::metadata(&image)?.len();
    let base = format!("base-{}", api.run);

    // 1. Import: create the base VDI, attach it on the importing host,
    //    write the image through the NBD address the API gives, detach.
    clock.time("import base image", || {
        api.call(
            "POST",
            "/v1/vdis",
            Some(json!({"name": base, "size": size})),
            201,
        )?;
        let att = api.call(
            "POST",
            &format!("/v1/vdis/{base}/attachments"),
            Some(json!({"host": "importer"})),
            201,
        )?;
        import(&image, att["disk"]["nbd"].as_str().ok_or("no NBD disk")?)?;
        let id = att["id"].as_str().ok_or("no attachment id")?;
        api.call(
            "DELETE",
            &format!("/v1/vdis/{base}/attachments/{id}"),
            None,
            200,
        )?;
        Ok(())
    })?;
    // 2. Snapshot it: the golden image every VM disk is cloned from.
    clock.time("snapshot", || {
        api.call(
            "POST",
            &format!("/v1/vdis/{base}/snapshots"),
            Some(json!({"tag": "gold"})),
            201,
        )
    })?;
    // 3. Provision: clone and attach each VM's disk; print its XML.
    let mut vms = Vec::new();
    let start = Instant::now();
    for i in 0..o.vms {
        let name = format!("{base}-vm{i}");
        api.call(
            "POST",
            &format!("/v1/vdis/{base}/snapshots/gold/clones"),
            Some(json!({"name": name})),
            201,
        )?;
        let att = api.call(
            "POST",
            &format!("/v1/vdis/{name}/attachments"),
            Some(json!({"host": format!("hv{}", i % 3)})),
            201,
        )?;
        let xml = att["disk"]["nbd"]
            .as_str()
            .ok_or("no NBD disk")?
            .to_string();
        if !o.quiet || i == 0 {
            println!(
                "<!-- {name} on {} -->\n{xml}",
                att["host"].as_str().unwrap_or("?")
            );
        }
        vms.push((name, att["id"].as_str().unwrap_or_default().to_string()));
    }
    let provision = start.elapsed();
    clock
        .0
        .push((format!("clone and attach {} VM disks", o.vms), provision));
    // 4. Tear down: detach and delete the clones, the snapshot, the base.
    clock.time("tear down", || {
        for (name, id) in &vms {
            api.call(
                "DELETE",
                &format!("/v1/vdis/{name}/attachments/{id}"),
                None,
                200,
            )?;
            api.call("DELETE", &format!("/v1/vdis/{name}"), None, 200)?;
        }
        api.call(
            "DELETE",
            &format!("/v1/vdis/{base}/snapshots/gold"),
            None,
            200,
        )?;
        api.call("DELETE", &format!("/v1/vdis/{base}"), None, 200)?;
        Ok(())
    })?;
    if o.image.is_none() {
        let _ = std::fs::remove_file(&image);
    }

    println!("\n{:<32} {:>10}", "step", "ms");
    for (step, d) in &clock.0 {
        println!("{step:<32} {:>10.1}", d.as_secs_f64() * 1000.0);
    }
    if o.vms > 0 {
        println!(
            "{:<32} {:>10.1}",
            "clone and attach, per VM",
            provision.as_secs_f64() * 1000.0 / o.vms as f64
        );
    }
    Ok(())
}
