//! In-process scenarios for the VDI layer: several sheep wired through an
//! in-memory membership (and real loopback sockets for peer RPC), driven
//! through the library API. They check the copy-on-write and reclamation
//! rules directly: every VDI reads its own data, snapshots are read-only,
//! and deleting in any order frees every object exactly when nothing
//! references it any more.

use std::sync::Arc;

use bytes::Bytes;
use qemu_proto::SdResult;
use sheep::cluster::{Member, MemoryNetwork};
use sheep::format::{ClusterConfig, FormatState};
use sheep::frontend::export::BlockExport;
use sheep::frontend::listener;
use sheep::node::Sheep;
use sheep::recovery::RecoveryOptions;
use sheep::store::ObjectStore;
use sheep::vdi::{NewVdi, VdiRef, VdiRegistry};

const MIB: u64 = 1 << 20;

struct Node {
    sheep: Arc<Sheep>,
    store: Arc<ObjectStore>,
    _dir: tempfile::TempDir,
}

async fn cluster(n: u32, copies: u8) -> Vec<Node> {
    let net = MemoryNetwork::new();
    let mut nodes = Vec::new();
    for zone in 0..n {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = Member {
            addr: listener.local_addr().unwrap(),
            zone,
            vnodes: 64,
            ctime: 0,
            space: 0,
        };
        let store = Arc::new(ObjectStore::open(dir.path(), true).unwrap());
        let sheep = Sheep::assemble(
            local.clone(),
            net.join(local),
            Arc::new(FormatState::load(None).unwrap()),
            Arc::new(VdiRegistry::load(None).unwrap()),
            Some(store.clone()),
            RecoveryOptions::default(),
        );
        tokio::spawn(listener::serve(sheep.clone(), listener));
        nodes.push(Node {
            sheep,
            store,
            _dir: dir,
        });
    }
    nodes[0]
        .sheep
        .format_cluster(ClusterConfig {
            ctime: 42,
            copies,
            copy_policy: 0,
            flags: 0,
            block_size_shift: 22,
            store: "plain".into(),
        })
        .await
        .unwrap();
    nodes
}

fn working(name: &str) -> VdiRef {
    VdiRef {
        name: name.into(),
        tag: String::new(),
        snapid: 0,
    }
}

async fn create(node: &Node, name: &str, size: u64) -> u32 {
    node.sheep
        .vdis
        .new_vdi(NewVdi {
            name: name.into(),
            size,
            copies: 0,
            block_size_shift: 0,
            snapid: 0,
            base: 0,
        })
        .await
        .unwrap()
}

/// Takes a snapshot tagged `tag` the way dog does; returns the snapshot's vid.
async fn snapshot(node: &Node, name: &str, tag: &str) -> u32 {
    let vdis = &node.sheep.vdis;
    let (vid, header) = vdis.lookup(&working(name)).await.unwrap();
    let mut tagged = header.clone();
    tagged.tag = tag.into();
    node.sheep
        .gateway
        .write(
            qemu_proto::ObjectId::inode(vid),
            0,
            Bytes::from(tagged.encode()),
            usize::from(header.nr_copies),
            true,
        )
        .await
        .unwrap();
    let new = vdis
        .new_vdi(NewVdi {
            name: name.into(),
            size: header.vdi_size,
            copies: 0,
            block_size_shift: 0,
            snapid: 1,
            base: vid,
        })
        .await
        .unwrap();
    assert_ne!(new, vid, "the working VDI moves to a new vid");
    vid
}

async fn clone(node: &Node, snap: u32, name: &str) -> u32 {
    node.sheep
        .vdis
        .new_vdi(NewVdi {
            name: name.into(),
            size: 0,
            copies: 0,
            block_size_shift: 0,
            snapid: 0,
            base: snap,
        })
        .await
        .unwrap()
}

async fn write(node: &Node, export: &str, offset: u64, byte: u8, len: usize) {
    let v = node.sheep.volumes.open_volume(export).await.unwrap();
    v.write(offset, Bytes::from(vec![byte; len]), true)
        .await
        .unwrap();
}

async fn read(node: &Node, export: &str, offset: u64, len: u32) -> Vec<u8> {
    let v = node.sheep.volumes.open_volume(export).await.unwrap();
    v.read(offset, len).await.unwrap().to_vec()
}

async fn data_objects(nodes: &[Node]) -> usize {
    let mut n = 0;
    for node in nodes {
        n += node.store.list().len();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_share_until_written_and_deletes_free_exactly_the_garbage() {
    let nodes = cluster(3, 2).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    create(a, "base", 16 * MIB).await;
    // Objects 0 and 1 hold base data; 2 and 3 stay unallocated.
    write(a, "base", 0, 0xb0, 4 * MIB as usize).await;
    write(a, "base", 4 * MIB + 100, 0xb1, 1000).await;
    let snap = snapshot(b, "base", "gold").await;

    // The snapshot is read-only through every node.
    let frozen = c.sheep.volumes.open_volume("base@gold").await.unwrap();
    assert!(frozen.read_only());
    let err = frozen
        .write(0, Bytes::from_static(b"x"), true)
        .await
        .unwrap_err();
    assert_eq!(err.result(), SdResult::READONLY);

    let c1 = clone(a, snap, "c1").await;
    let c2 = clone(b, snap, "c2").await;
    assert_ne!(c1, c2);
    // A clone reads the base's data until it writes; the first write into
    // a shared object copies it (partially overwritten, unaligned).
    assert_eq!(read(c, "c1", 0, 8).await, vec![0xb0; 8]);
    write(c, "c1", 4 * MIB + 101, 0xc1, 10).await;
    let got = read(a, "c1", 4 * MIB + 99, 13).await;
    assert_eq!(got[0], 0);
    assert_eq!(&got[1..2], &[0xb1]);
    assert_eq!(&got[2..12], &[0xc1; 10]);
    assert_eq!(got[12], 0xb1);
    write(b, "c2", 8 * MIB, 0xc2, 4096).await;
    // Nobody else changed.
    assert_eq!(read(b, "base@gold", 4 * MIB + 101, 4).await, vec![0xb1; 4]);
    assert_eq!(read(b, "base", 4 * MIB + 101, 4).await, vec![0xb1; 4]);
    assert_eq!(read(b, "c2", 4 * MIB + 101, 4).await, vec![0xb1; 4]);
    assert_eq!(read(a, "c1", 8 * MIB, 4).await, vec![0; 4]);
    // The working base writes into its own copy, not the snapshot's.
    write(a, "base", 0, 0xbb, 4).await;
    assert_eq!(read(c, "base@gold", 0, 4).await, vec![0xb0; 4]);
    assert_eq!(read(c, "c1", 0, 4).await, vec![0xb0; 4]);

    // Delete the base first, then its snapshot: the clones keep working.
    let vdis = &a.sheep.vdis;
    vdis.delete(working("base")).await.unwrap();
    let gold = VdiRef {
        name: "base".into(),
        tag: "gold".into(),
        snapid: 0,
    };
    vdis.delete(gold).await.unwrap();
    assert_eq!(read(b, "c1", 0, 4).await, vec![0xb0; 4]);
    assert_eq!(read(c, "c2", 4 * MIB + 100, 2).await, vec![0xb1; 2]);

    // Flatten c2: it no longer needs the snapshot's objects.
    c.sheep.vdis.flatten(working("c2")).await.unwrap();
    vdis.delete(working("c1")).await.unwrap();
    assert_eq!(read(a, "c2", 0, 4).await, vec![0xb0; 4]);
    assert_eq!(read(a, "c2", 8 * MIB, 4).await, vec![0xc2; 4]);

    // Deleting the last VDI leaves nothing behind on any node.
    vdis.delete(working("c2")).await.unwrap();
    assert_eq!(data_objects(&nodes).await, 0);
    for n in &nodes {
        n.sheep.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_stay_unique_across_creates_clones_and_snapshots() {
    let nodes = cluster(3, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    create(a, "x", 8 * MIB).await;
    let snap = snapshot(a, "x", "s1").await;
    // A clone may not take an existing working VDI's name...
    let err = b
        .sheep
        .vdis
        .new_vdi(NewVdi {
            name: "x".into(),
            size: 0,
            copies: 0,
            block_size_shift: 0,
            snapid: 0,
            base: snap,
        })
        .await
        .unwrap_err();
    assert_eq!(err.result(), SdResult::VDI_EXIST);
    // ...but after the working VDI is deleted, rolling back is exactly that.
    a.sheep.vdis.delete(working("x")).await.unwrap();
    let rolled = clone(b, snap, "x").await;
    let (found, header) = a.sheep.vdis.lookup(&working("x")).await.unwrap();
    assert_eq!(found, rolled);
    assert_eq!(header.snap_id, 2, "one more than the remaining snapshot's");
    // Only snapshots can be cloned.
    let err = a
        .sheep
        .vdis
        .new_vdi(NewVdi {
            name: "y".into(),
            size: 0,
            copies: 0,
            block_size_shift: 0,
            snapid: 0,
            base: rolled,
        })
        .await
        .unwrap_err();
    assert_eq!(err.result(), SdResult::INVALID_PARMS);
    for n in &nodes {
        n.sheep.shutdown().await;
    }
}
