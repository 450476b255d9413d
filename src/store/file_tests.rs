//! FileStore tests, on real directories.

use super::*;
use serde_json::json;

fn open(dir: &Path, keep: usize) -> FileStore {
    FileStore::open(dir, keep).unwrap()
}

async fn commit_n(store: &FileStore, from: u64, n: u64) {
    for i in from..from + n {
        let (state, summary) = (json!({"i": i + 1}), format!("change {}", i + 1));
        let got = store.commit(i, &state, "alice", &summary).await;
        assert_eq!(got.unwrap(), i + 1);
    }
}

#[tokio::test]
async fn commit_head_history_and_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10);
    assert_eq!(store.head().await.unwrap(), Revision::empty());
    let mut feed = store.subscribe();

    let state = json!({"roles": [{"id": "admin"}], "policies": {}});
    assert_eq!(store.commit(0, &state, "alice", "first").await.unwrap(), 1);
    assert!(feed.has_changed().unwrap());
    assert_eq!(*feed.borrow_and_update(), 1);

    let head = store.head().await.unwrap();
    assert_eq!(
        (head.number, head.actor.as_str(), head.summary.as_str()),
        (1, "alice", "first")
    );
    assert_eq!(head.state, state);
    assert!(head.committed_at.ends_with('Z') && head.committed_at.len() == 27);

    // A writer that read revision 0 lost the race; one ahead of the head is refused too.
    assert_eq!(
        store.commit(0, &json!({}), "bob", "stale").await,
        Err(StoreError::Conflict)
    );
    assert_eq!(
        store.commit(5, &json!({}), "bob", "future").await,
        Err(StoreError::Conflict)
    );
    assert!(!feed.has_changed().unwrap());

    assert_eq!(
        store
            .commit(1, &json!({"v": 2}), "bob", "second")
            .await
            .unwrap(),
        2
    );
    let infos = store.revisions(10, None).await.unwrap();
    let numbers: Vec<u64> = infos.iter().map(|i| i.number).collect();
    assert_eq!(numbers, [2, 1]);
    assert_eq!(infos[1], head.info());
    assert_eq!(store.revision(1).await.unwrap(), head);
    assert_eq!(store.revision(0).await, Err(StoreError::NotFound));
    assert_eq!(store.revision(3).await, Err(StoreError::NotFound));
    assert!(store.health().is_ok());
}

#[tokio::test]
async fn history_pages_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 100);
    commit_n(&store, 0, 7).await;
    let page = |limit, before| {
        let store = &store;
        async move {
            let infos = store.revisions(limit, before).await.unwrap();
            infos.into_iter().map(|i| i.number).collect::<Vec<u64>>()
        }
    };
    assert_eq!(page(3, None).await, [7, 6, 5]);
    assert_eq!(page(3, Some(5)).await, [4, 3, 2]);
    assert_eq!(page(3, Some(2)).await, [1]);
    assert_eq!(page(3, Some(1)).await, Vec::<u64>::new());
    assert_eq!(page(0, None).await, Vec::<u64>::new());
    assert_eq!(page(100, Some(1000)).await.len(), 7);
}

#[tokio::test]
async fn prunes_to_the_last_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 3);
    commit_n(&store, 0, 6).await;
    let numbers: Vec<u64> = store
        .revisions(100, None)
        .await
        .unwrap()
        .iter()
        .map(|i| i.number)
        .collect();
    assert_eq!(numbers, [6, 5, 4]);
    assert_eq!(store.revision(3).await, Err(StoreError::NotFound));
    assert_eq!(store.revision(4).await.unwrap().state, json!({"i": 4}));
    let mut files = list_revisions(dir.path()).unwrap();
    files.sort_unstable();
    assert_eq!(files, [4, 5, 6]);
}

#[tokio::test]
async fn reopening_finds_the_head_and_history() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), 10);
        commit_n(&store, 0, 3).await;
    }
    let store = open(dir.path(), 10);
    assert_eq!(store.head().await.unwrap().state, json!({"i": 3}));
    assert_eq!(*store.subscribe().borrow(), 3);
    assert_eq!(store.revisions(10, None).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_crash_never_yields_a_partial_head() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), 10);
        commit_n(&store, 0, 3).await;
    }
    // A commit interrupted before its rename leaves a temporary file; one that a damaged disk
    // cut short leaves a truncated revision file.
    let tmp = dir.path().join(format!(".tmp-{}", file_name(4)));
    fs::write(&tmp, br#"{"number": 4, "committed_at": "#).unwrap();
    let newest = dir.path().join(file_name(3));
    let full = fs::read(&newest).unwrap();
    fs::write(&newest, &full[..full.len() / 2]).unwrap();

    let store = open(dir.path(), 10);
    let head = store.head().await.unwrap();
    assert_eq!((head.number, head.state), (2, json!({"i": 2})));
    assert!(!tmp.exists(), "the temporary file is removed");
    assert!(dir
        .path()
        .join(format!("{}.corrupt", file_name(3)))
        .exists());
    assert_eq!(
        store.commit(3, &json!({}), "a", "x").await,
        Err(StoreError::Conflict)
    );
    assert_eq!(
        store
            .commit(2, &json!({"new": 3}), "a", "redo")
            .await
            .unwrap(),
        3
    );
    assert_eq!(store.revision(3).await.unwrap().state, json!({"new": 3}));
}

#[tokio::test]
async fn a_file_naming_another_revision_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10);
    commit_n(&store, 0, 3).await;
    fs::copy(dir.path().join(file_name(2)), dir.path().join(file_name(1))).unwrap();
    assert!(matches!(
        store.revision(1).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.revisions(10, None).await,
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::test]
async fn a_second_opener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path(), 10);
    let err = FileStore::open(dir.path(), 10).err().unwrap();
    assert!(matches!(err, StoreError::Invalid(_)));
    assert!(
        err.to_string()
            .contains("in use by another graphguard process"),
        "{err}"
    );
    drop(first);
    assert!(
        FileStore::open(dir.path(), 10).is_ok(),
        "the lock goes with the store"
    );
}

#[tokio::test]
async fn nul_characters_are_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10);
    let err = store.commit(0, &json!({"d": "a\u{0}b"}), "a", "x").await;
    assert!(matches!(err, Err(StoreError::Invalid(_))));
    assert_eq!(store.head().await.unwrap().number, 0);
}

#[test]
fn file_names_round_trip() {
    assert_eq!(file_name(123), "rev-000000000123.json");
    assert_eq!(parse_file_name("rev-000000000123.json"), Some(123));
    for other in [
        "rev-.json",
        "rev-12.json.corrupt",
        ".tmp-rev-1.json",
        "rev-1a.json",
        "lock",
    ] {
        assert_eq!(parse_file_name(other), None, "{other}");
    }
}
