//! A reader that opened a vault's store before a backup and a prune still
//! finds every blob afterwards (issue #12, finding 7): prune replaces the
//! indexes a reader mapped by one it never listed, and removes the packs
//! it rewrote.

mod common;

use cbrfs::catalog::Store;
use cbrfs::engine::{prune, vaults};
use cbrfs::model::{self, Content};
use cbrfs::store::BlobId;
use common::{filesystem_vault, pseudo_random, take_backup};

/// The data chunks of the file `name` at the top of the first resource of
/// backup `rec`.
fn chunks_of(store: &Store, rec: &model::BackupRecord, name: &[u8]) -> Vec<BlobId> {
    let repo = store.repo(&rec.vault).unwrap();
    let tree = model::decode_tree(&repo.read_blob(&rec.resources[0].root).unwrap()).unwrap();
    match &tree.find(name).unwrap().content {
        Content::Chunks(cs) => cs.iter().map(|c| c.id).collect(),
        other => panic!("expected a short chunk list, got {other:?}"),
    }
}

#[test]
fn reader_opened_before_prune_finds_blobs_written_and_moved_since() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("old"), pseudo_random(3 << 20, 11)).unwrap();
    std::fs::write(src.join("kept"), pseudo_random(1 << 20, 21)).unwrap();
    let store = Store::init(&dir.path().join("store")).unwrap();
    filesystem_vault(&store, "v", "", "none");
    vaults::associate_path(&store, "v", &src, Some("src".into()), vec![]).unwrap();
    take_backup(&store, "v", "b1");

    // The reader: opened now, it maps b1's index only.
    let reader = store.repo("v").unwrap();
    let before = reader.index_count();

    // A second backup writes an index the reader never listed; deleting b1
    // and pruning with threshold 100 rewrites every pack b2 still uses
    // into new packs, writes one new index and removes the old ones.
    std::fs::remove_file(src.join("old")).unwrap();
    std::fs::write(src.join("new"), pseudo_random(1 << 20, 33)).unwrap();
    let b2 = take_backup(&store, "v", "b2");
    store.delete_backup("v", "b1").unwrap();
    let report = prune::prune(&store, "v", false, 100).unwrap();
    eprintln!("prune: {report:?}");

    let new_chunks = chunks_of(&store, &b2, b"new");
    let kept_chunks = chunks_of(&store, &b2, b"kept");
    assert!(!new_chunks.is_empty() && !kept_chunks.is_empty());
    // The reader's mapped indexes are the old ones: it does not know "new".
    assert_eq!(reader.index_count(), before);
    assert!(reader.lookup(&new_chunks[0]).is_none());
    // Written after it opened, then moved by prune: found by re-listing.
    for id in new_chunks.iter().chain(&kept_chunks) {
        let data = reader
            .read_blob(id)
            .unwrap_or_else(|e| panic!("blob {id} unreadable beside prune: {e}"));
        assert_eq!(reader.key().id(&data), *id);
    }
    // And the whole backup reads through the same reader.
    let tree = model::decode_tree(&reader.read_blob(&b2.resources[0].root).unwrap()).unwrap();
    assert!(tree.find(b"new").is_some() && tree.find(b"old").is_none());
}
