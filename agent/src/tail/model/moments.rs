//! The moments the issues named, spelled out as sequences of the model's operations.

use proptest::prelude::*;

use super::{Layout, Op, run, run_in};

/// The moments the issue names, spelled out: a restart between the rename and the reopen
/// with lines unread; a copytruncate with lines unread; an unfinished line in a renamed file.
#[test]
fn named_moments() -> Result<(), TestCaseError> {
    use Op::*;
    let w = |lines| Write { lines, unfinished: false };
    run(&[w(20), Tick, Checkpoint, w(20), Rename, w(5), Restart, Tick])?;
    run(&[w(20), Tick, AckAll, Checkpoint, w(30), CopyTruncate, w(10), Tick])?;
    run(&[w(20), Tick, w(3), CopyTruncate, Restart, w(4), Tick])?;
    run(&[Write { lines: 5, unfinished: true }, Tick, Rename, Tick, Restart, Tick, Reopen, w(2)])?;
    run(&[w(10), Tick, Rename, Reopen, w(10), Rename, Restart, Reopen, w(3), CopyTruncate, Tick])?;
    // Kubelet: a rotation behind the symlink while the agent is down (found in the link's
    // target folder, the link dangling until the runtime reopens), and a pod deleted with
    // lines unread.
    run_in(Layout::Kubelet, &[w(20), Tick, Checkpoint, w(20), Rename, w(5), Restart, Tick, Reopen, w(3), Tick])?;
    run_in(Layout::Kubelet, &[w(20), Tick, w(20), Rename, Reopen, w(5), Tick, w(7), DeletePod, Tick])?;
    // Rotations deleted once read (kubelet's max files), with the agent restarted after.
    let rotate = [Rename, w(4), Reopen, w(6), Tick, AckAll, Checkpoint];
    let mut ops = vec![w(10), Tick, AckAll];
    ops.extend(rotate.iter().cloned().chain(rotate.iter().cloned()));
    ops.extend([DeleteRotated, Restart, w(3), Tick, DeleteRotated, w(2), Tick]);
    run_in(Layout::Kubelet, &ops)?;
    // Copytruncate and the file written past the old read offset before any scan: the read
    // between scans notices it (the head changed) instead of reading on from the old offset.
    run(&[w(20), Tick, AckAll, Checkpoint, w(30), CopyTruncate, w(60), Read, Tick])?;
    run(&[w(20), Tick, w(30), Read, CopyTruncate, w(60), Read, w(5), Read, Tick])?;
    // A device renumbered across a restart, with a rotation and lines unread: the checkpoints
    // are taken over by the files' new identities, without duplicates or loss.
    // A copytruncate whose copy is deleted once read, then a rename and a line written, all
    // while the agent is down: the renamed file is found by its inode, its new head
    // notwithstanding, and read from its start.
    let rotate_away = [w(1), Tick, Ack(0), Reopen, CopyTruncate, DeleteRotated, Rename, w(1), Restart];
    run(&rotate_away)?;
    run_in(Layout::PlainClosing, &rotate_away)?;
    // A copytruncate, a restart and a first scan whose listing fails: the file found at its
    // path is opened like a matched one (its copy finished first), not from a stale offset and
    // then closed as idle.
    run_in(Layout::PlainClosing, &[w(1), Tick, CopyTruncate, Restart, ListingFails])?;
    // A file closed as idle, copytruncated and renamed, then a scan whose listing fails: the
    // renamed file is reopened as what it is, a rotation outside the globs, not as a file the
    // listing missed (which would be closed and never read again).
    let closed_rotation = [w(1), Tick, Tick, CopyTruncate, Rename, ListingFails, w(1)];
    run_in(Layout::PlainClosing, &closed_rotation)?;
    let resent = run(&[w(20), Tick, AckAll, Checkpoint, w(10), Renumber, Tick, AckAll, Checkpoint])?;
    prop_assert_eq!(resent, 0, "lines acknowledged and checkpointed before the renumbering were sent again");
    run(&[w(20), Tick, AckAll, Checkpoint, w(10), Rename, Reopen, w(5), Renumber, Tick])?;
    Ok(())
}
