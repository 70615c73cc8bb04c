//! `dog vdi tree`: the VDI family trees, laid out as Sheepdog's
//! `dog/treeview.c` prints them.
//!
//! Entries are added in walk (vid) order. Each hangs under the entry with
//! the same name whose vid is its `parent_vdi_id`, if that one is already
//! there, else at the top level (so a clone, which has its own name, starts
//! a tree of its own). A compaction pass then moves entries whose parent
//! came later in the walk under it, the way Sheepdog's `compaction()` does
//! (including its iteration order). Rendering: each top-level entry prints
//! its name, then `---`/`-+-` to its label; further children go on lines
//! of their own, indented under their parent's label with `|-` and `` `- ``.
//!
//! Nothing here does I/O.

/// One VDI of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// VDI name (the tree it belongs to).
    pub name: String,
    /// `[%Y-%m-%d %H:%M]` for a snapshot, `(you are here)` for a working VDI.
    pub label: String,
    /// Own vid.
    pub vid: u32,
    /// `parent_vdi_id`.
    pub pvid: u32,
    /// Print the label in bold (working VDI, stdout a terminal).
    pub highlight: bool,
}

/// The label of a working VDI.
pub const YOU_ARE_HERE: &str = "(you are here)";
/// Bold on / off (`TEXT_BOLD`, `TEXT_NORMAL`).
const TEXT_BOLD: &str = "\x1b[1m";
const TEXT_NORMAL: &str = "\x1b[0m";

/// The tree under construction: node 0 is the (unnamed) root.
struct Tree<'a> {
    entries: Vec<Option<&'a TreeEntry>>,
    children: Vec<Vec<usize>>,
    parent: Vec<usize>,
}

impl<'a> Tree<'a> {
    fn new() -> Self {
        Tree {
            entries: vec![None],
            children: vec![Vec::new()],
            parent: vec![0],
        }
    }

    /// `find_vdi`: depth-first, in list order, below `from` (not `from`
    /// itself): the first node with this vid and name.
    fn find(&self, from: usize, vid: u32, name: &str) -> Option<usize> {
        for &c in &self.children[from] {
            if let Some(e) = self.entries[c] {
                if e.vid == vid && e.name == name {
                    return Some(c);
                }
            }
            if let Some(found) = self.find(c, vid, name) {
                return Some(found);
            }
        }
        None
    }

    /// True if `node` is `ancestor` or lies below it.
    fn is_within(&self, mut node: usize, ancestor: usize) -> bool {
        loop {
            if node == ancestor {
                return true;
            }
            if node == 0 {
                return false;
            }
            node = self.parent[node];
        }
    }

    /// `add_vdi_tree`.
    fn add(&mut self, e: &'a TreeEntry) {
        let parent = self.find(0, e.pvid, &e.name).unwrap_or(0);
        let id = self.entries.len();
        self.entries.push(Some(e));
        self.children.push(Vec::new());
        self.parent.push(parent);
        self.children[parent].push(id);
    }

    /// `list_move_tail`.
    fn move_tail(&mut self, node: usize, new_parent: usize) {
        let old = self.parent[node];
        self.children[old].retain(|&c| c != node);
        self.children[new_parent].push(node);
        self.parent[node] = new_parent;
    }

    /// `compaction`: Sheepdog walks each child list with a "safe" iterator
    /// that fetches the next sibling before the body runs; the body may move
    /// the current node elsewhere and recurses into it.
    fn compaction(&mut self, parent: usize) {
        let mut cur = self.children[parent].first().copied();
        while let Some(node) = cur {
            let list = &self.children[parent];
            let next = list
                .iter()
                .position(|&c| c == node)
                .and_then(|i| list.get(i + 1).copied());
            if let Some(e) = self.entries[node] {
                if let Some(np) = self.find(0, e.pvid, &e.name) {
                    // A parent inside the node's own subtree would make a
                    // cycle (only possible with corrupt parent links).
                    if np != parent && !self.is_within(np, node) {
                        self.move_tail(node, np);
                    }
                }
            }
            self.compaction(node);
            cur = next;
        }
    }
}

/// Layout state of `_dump_tree`: label width and "more siblings follow"
/// per level.
struct Dump {
    width: Vec<usize>,
    more: Vec<bool>,
    out: String,
}

impl Dump {
    fn set(&mut self, level: usize, width: usize, more: bool) {
        if self.width.len() <= level {
            self.width.resize(level + 1, 0);
            self.more.resize(level + 1, false);
        }
        self.width[level] = width;
        self.more[level] = more;
    }

    fn spaces(&mut self, n: usize) {
        self.out.extend(std::iter::repeat_n(' ', n));
    }

    /// `indent`.
    fn indent(&mut self, level: usize, first: bool, last: bool) {
        if first {
            self.out.push_str(if last { "---" } else { "-+-" });
            return;
        }
        for lvl in 0..level - 1 {
            self.spaces(self.width[lvl] + 1);
            let bar = if self.more[lvl + 1] { "| " } else { "  " };
            self.out.push_str(bar);
        }
        self.spaces(self.width[level - 1] + 1);
        self.out.push_str(if last { "`-" } else { "|-" });
    }

    /// `_dump_tree`.
    fn node(&mut self, tree: &Tree, node: usize, level: usize, first: bool, last: bool) {
        self.indent(level, first, last);
        let e = tree.entries[node].expect("only the root has no entry");
        if e.highlight {
            self.out.push_str(TEXT_BOLD);
        }
        self.out.push_str(&e.label);
        if e.highlight {
            self.out.push_str(TEXT_NORMAL);
        }
        let children = &tree.children[node];
        if children.is_empty() {
            self.out.push('\n');
            return;
        }
        self.set(level, e.label.len(), !last);
        let n = children.len();
        for (i, &c) in children.iter().enumerate() {
            self.node(tree, c, level + 1, i == 0, i + 1 == n);
        }
    }
}

/// Renders the trees of `entries` (given in walk order), exactly as
/// `dog vdi tree` prints them.
pub fn render(entries: &[TreeEntry]) -> String {
    let mut tree = Tree::new();
    for e in entries {
        tree.add(e);
    }
    tree.compaction(0);
    let mut dump = Dump {
        width: Vec::new(),
        more: Vec::new(),
        out: String::new(),
    };
    for &top in &tree.children[0] {
        let e = tree.entries[top].expect("top-level nodes have entries");
        dump.out.push_str(&e.name);
        dump.set(0, e.name.len(), false);
        dump.node(&tree, top, 1, true, true);
    }
    dump.out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "[2018-01-01 00:00]";

    fn snap(name: &str, vid: u32, pvid: u32) -> TreeEntry {
        TreeEntry {
            name: name.into(),
            label: DATE.into(),
            vid,
            pvid,
            highlight: false,
        }
    }

    fn cur(name: &str, vid: u32, pvid: u32) -> TreeEntry {
        TreeEntry {
            label: YOU_ARE_HERE.into(),
            ..snap(name, vid, pvid)
        }
    }

    /// Sheepdog's `_filter_short_date` on the golden outputs.
    fn filter_dates(s: &str) -> String {
        s.replace(DATE, "[DATE]")
    }

    #[test]
    fn chain_of_snapshots() {
        // tests/functional/041 (first tree) and 059.
        let v = [
            snap("test", 0x7c2b25, 0),
            snap("test", 0x7c2b26, 0x7c2b25),
            snap("test", 0x7c2b27, 0x7c2b26),
            cur("test", 0x7c2b28, 0x7c2b27),
        ];
        assert_eq!(
            render(&v),
            "test---[2018-01-01 00:00]---[2018-01-01 00:00]---[2018-01-01 00:00]---(you are here)\n"
        );
    }

    #[test]
    fn golden_039_rollback() {
        // After one rollback to snap1: snap1 -> (snap2, working).
        let v = [
            snap("test", 0x7c2b25, 0),
            snap("test", 0x7c2b27, 0x7c2b25),
            cur("test", 0x7c2b29, 0x7c2b25),
        ];
        assert_eq!(
            filter_dates(&render(&v)),
            "test---[DATE]-+-[DATE]\n                          `-(you are here)\n"
        );
        // The last tree of 039.
        let v = [
            snap("test", 0x7c2b25, 0),
            snap("test", 0x7c2b27, 0x7c2b25),
            snap("test", 0x7c2b2b, 0x7c2b25),
            snap("test", 0x7c2b2c, 0x7c2b2b),
            cur("test", 0x7c2b2e, 0x7c2b2b),
        ];
        assert_eq!(
            filter_dates(&render(&v)),
            "test---[DATE]-+-[DATE]\n\
             \x20                         `-[DATE]-+-[DATE]\n\
             \x20                                              `-(you are here)\n"
        );
    }

    #[test]
    fn golden_017_two_trees() {
        let v = [
            snap("test", 0x7c2b25, 0),
            snap("test", 0x7c2b26, 0x7c2b25),
            snap("test", 0x7c2b27, 0x7c2b26),
            cur("test", 0x7c2b28, 0x7c2b27),
            snap("test2", 0xfd3815, 0),
            snap("test2", 0xfd3816, 0xfd3815),
            snap("test2", 0xfd3817, 0xfd3815),
            cur("test2", 0xfd3818, 0xfd3817),
        ];
        assert_eq!(
            filter_dates(&render(&v)),
            "test---[DATE]---[DATE]---[DATE]---(you are here)\n\
             test2---[DATE]-+-[DATE]\n\
             \x20                          `-[DATE]---(you are here)\n"
        );
    }

    #[test]
    fn golden_041_last_tree() {
        let v = [
            snap("test", 0x25, 0),
            snap("test", 0x26, 0x25),
            snap("test", 0x27, 0x26),
            snap("test", 0x29, 0x25),
            snap("test", 0x2b, 0x29),
            snap("test", 0x2d, 0x25),
            snap("test", 0x2f, 0x26),
            cur("test", 0x30, 0x27),
        ];
        assert_eq!(
            filter_dates(&render(&v)),
            "test---[DATE]-+-[DATE]-+-[DATE]---(you are here)\n\
             \x20                         |                    `-[DATE]\n\
             \x20                         |-[DATE]---[DATE]\n\
             \x20                         `-[DATE]\n"
        );
    }

    #[test]
    fn lone_vdi_and_clone() {
        // A clone has its own name: it starts its own tree.
        let v = [
            snap("base", 0x10, 0),
            cur("base", 0x11, 0x10),
            cur("clone", 0x20, 0x10),
            cur("plain", 0x30, 0),
        ];
        assert_eq!(
            render(&v),
            "base---[2018-01-01 00:00]---(you are here)\nclone---(you are here)\nplain---(you are here)\n"
        );
        assert_eq!(render(&[]), "");
    }

    #[test]
    fn parent_after_child_is_compacted() {
        // The working VDI's vid wrapped around below its parent's.
        let v = [
            cur("w", 0x2, 0xfffffe),
            snap("w", 0xfffffd, 0),
            snap("w", 0xfffffe, 0xfffffd),
        ];
        assert_eq!(
            render(&v),
            "w---[2018-01-01 00:00]---[2018-01-01 00:00]---(you are here)\n"
        );
    }

    #[test]
    fn corrupt_parent_links_do_not_loop() {
        let v = [cur("x", 1, 1), snap("y", 2, 3), snap("y", 3, 2)];
        let out = render(&v);
        assert!(out.starts_with("x---(you are here)\n"));
    }

    #[test]
    fn highlight_is_bold() {
        let mut e = cur("v", 1, 0);
        e.highlight = true;
        assert_eq!(render(&[e]), "v---\x1b[1m(you are here)\x1b[0m\n");
    }
}
