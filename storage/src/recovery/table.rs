//! Recovery's decisions as data: what the checkpoint is worth ([`CheckpointState`]), what each
//! chunk of the tail is ([`ChunkVerdict`]), and the one pure function, [`decide`], that maps
//! every combination to an [`Action`]. The I/O of recovery (`recovery::scan`) only finds facts
//! and carries out actions; it decides nothing itself.
//!
//! The unit test at the bottom is the specification: a table of every combination.

/// What recovery found in the checkpoint file, judged against the segments found.
///
/// A checkpoint written by a store of another layout (shard, segment size, consume-queue file
/// size) is not a state: the store refuses to open before anything here is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckpointState {
    /// No checkpoint file: a new store, or one that crashed before its first checkpoint.
    Missing,
    /// The file does not verify (length, magic, CRC or JSON): it vouches for nothing.
    Corrupt,
    /// Its log offset lies within the segments found (or, with no segment, is the shard's
    /// base): recovery starts there and loads the queues it lists.
    Valid {
        /// The store was closed cleanly after it.
        clean_shutdown: bool,
    },
    /// Its log offset lies outside the segments found (an empty replica moved to an earlier
    /// start crashed before its next checkpoint): it vouches for nothing here.
    BeyondLog {
        /// The store was closed cleanly after it.
        clean_shutdown: bool,
    },
}

/// The checkpoint file as read, before it is judged against the segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckpointFile {
    /// No file.
    Missing,
    /// A file that does not verify.
    Corrupt,
    /// A verified checkpoint (of this store's layout).
    Read {
        /// Its log offset.
        log_offset: u64,
        /// Its clean-shutdown flag.
        clean_shutdown: bool,
    },
}

impl CheckpointState {
    /// Judges `file` against the segments found: `segments` is (first segment's start, last
    /// segment's end) when there are any; `base` is the shard's first offset.
    pub const fn classify(file: CheckpointFile, segments: Option<(u64, u64)>, base: u64) -> Self {
        match file {
            CheckpointFile::Missing => Self::Missing,
            CheckpointFile::Corrupt => Self::Corrupt,
            CheckpointFile::Read {
                log_offset,
                clean_shutdown,
            } => {
                let within = match segments {
                    Some((first, end)) => log_offset >= first && log_offset <= end,
                    None => log_offset == base,
                };
                if within {
                    Self::Valid { clean_shutdown }
                } else {
                    Self::BeyondLog { clean_shutdown }
                }
            }
        }
    }

    /// Whether recovery starts at the checkpoint's offset and loads the queues it lists;
    /// otherwise it reads the whole log from the first segment and rebuilds every queue.
    pub const fn trusted(self) -> bool {
        matches!(self, Self::Valid { .. })
    }

    /// Whether the checkpoint, trusted or not, says the store was closed cleanly after it:
    /// the zeros past the log's end were then never written, and need not be cut.
    pub const fn clean_shutdown(self) -> bool {
        match self {
            Self::Missing | Self::Corrupt => false,
            Self::Valid { clean_shutdown } | Self::BeyondLog { clean_shutdown } => clean_shutdown,
        }
    }
}

/// What recovery found at a chunk position of the log's tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkVerdict {
    /// Header CRC, payload CRC and every record (framing, physical offset, queue continuity)
    /// check out.
    Valid,
    /// Sixteen zero bytes where a header would be: nothing was written here.
    Zeroed,
    /// A header whose CRC or magic is wrong: a torn or corrupt write, or stale bytes written
    /// for another position.
    TornHeader,
    /// An end-of-segment marker: the segment is done.
    EndMarker,
    /// Less room than a chunk header left in the segment, or in its file when the file is
    /// shorter (not preallocated): the segment is done.
    SegmentTail,
    /// A valid header whose payload runs past the end of the segment (or of its file).
    Overrun,
    /// A valid header whose payload does not match its CRC.
    PayloadCrcMismatch,
    /// A payload that matches its CRC but whose records do not decode, do not lie at their
    /// PHYSICALOFFSET or do not continue their consume queue.
    RecordMismatch,
}

/// Whether the chunk's segment is the last segment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegmentPlace {
    /// The last segment (the active one when the store stopped).
    Last,
    /// Another segment follows.
    NotLast,
}

/// What recovery does at a chunk. Every action but [`Action::Index`] and
/// [`Action::NextSegment`] ends the scan: the log ends there, and the segment files after the
/// end are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Keep the chunk: index its records and read on after it.
    Index,
    /// The segment is done: read on at the next segment's start.
    NextSegment,
    /// The log ends at the end of this, the last, segment: the next append starts a new one.
    EndAtSegmentEnd,
    /// The log ends here; the zeros after it are kept (a clean shutdown wrote nothing past).
    EndKeepTail,
    /// The log ends here and the segment is truncated here (and re-reserved): after an unclean
    /// shutdown stale bytes may lie past the zeros, and none may ever be read as a chunk.
    EndTruncate,
    /// The chunk is torn or corrupt: logged, and the segment is truncated before it.
    TruncateDamaged,
}

/// The action for a chunk with `verdict` in a segment at `place`, under a checkpoint in
/// `checkpoint` state.
///
/// The scan starts at a trusted checkpoint's offset, so every chunk judged lies at or past it;
/// no other positional fact changes an action.
pub(crate) const fn decide(
    checkpoint: CheckpointState,
    verdict: ChunkVerdict,
    place: SegmentPlace,
) -> Action {
    match verdict {
        ChunkVerdict::Valid => Action::Index,
        ChunkVerdict::EndMarker | ChunkVerdict::SegmentTail => match place {
            SegmentPlace::NotLast => Action::NextSegment,
            SegmentPlace::Last => Action::EndAtSegmentEnd,
        },
        ChunkVerdict::Zeroed => {
            if checkpoint.clean_shutdown() {
                Action::EndKeepTail
            } else {
                Action::EndTruncate
            }
        }
        ChunkVerdict::TornHeader
        | ChunkVerdict::Overrun
        | ChunkVerdict::PayloadCrcMismatch
        | ChunkVerdict::RecordMismatch => Action::TruncateDamaged,
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Action::{
            EndAtSegmentEnd as AtSegEnd, EndKeepTail as Keep, EndTruncate as Cut, Index,
            NextSegment as NextSeg, TruncateDamaged as Damaged,
        },
        ChunkVerdict::{
            EndMarker, Overrun, PayloadCrcMismatch, RecordMismatch, SegmentTail, TornHeader, Valid,
            Zeroed,
        },
        SegmentPlace::{Last, NotLast},
        *,
    };

    /// The checkpoint states, in the order of the table's columns.
    const CHECKPOINTS: [CheckpointState; 6] = [
        CheckpointState::Missing,
        CheckpointState::Corrupt,
        CheckpointState::Valid {
            clean_shutdown: false,
        },
        CheckpointState::Valid {
            clean_shutdown: true,
        },
        CheckpointState::BeyondLog {
            clean_shutdown: false,
        },
        CheckpointState::BeyondLog {
            clean_shutdown: true,
        },
    ];

    const VERDICTS: [ChunkVerdict; 8] = [
        Valid,
        Zeroed,
        TornHeader,
        EndMarker,
        SegmentTail,
        Overrun,
        PayloadCrcMismatch,
        RecordMismatch,
    ];

    /// THE SPECIFICATION. One row per (chunk verdict, segment place); one column per checkpoint
    /// state, in the order of [`CHECKPOINTS`].
    #[rustfmt::skip]
    const TABLE: [(ChunkVerdict, SegmentPlace, [Action; 6]); 16] = [
        //                                   checkpoint: Missing   Corrupt   Valid     Valid     Beyond    Beyond
        //                                                                   unclean   clean     unclean   clean
        (Valid,              NotLast, /* */ [Index,    Index,    Index,    Index,    Index,    Index   ]),
        (Valid,              Last,    /* */ [Index,    Index,    Index,    Index,    Index,    Index   ]),
        (Zeroed,             NotLast, /* */ [Cut,      Cut,      Cut,      Keep,     Cut,      Keep    ]),
        (Zeroed,             Last,    /* */ [Cut,      Cut,      Cut,      Keep,     Cut,      Keep    ]),
        (TornHeader,         NotLast, /* */ [Damaged,  Damaged,  Damaged,  Damaged,  Damaged,  Damaged ]),
        (TornHeader,         Last,    /* */ [Damaged,  Damaged,  Damaged,  Damaged,  Damaged,  Damaged ]),
        (EndMarker,          NotLast, /* */ [NextSeg,  NextSeg,  NextSeg,  NextSeg,  NextSeg,  NextSeg ]),
        (EndMarker,          Last,    /* */ [AtSegEnd, AtSegEnd, AtSegEnd, AtSegEnd, AtSegEnd, AtSegEnd]),
        (SegmentTail,        NotLast, /* */ [NextSeg,  NextSeg,  NextSeg,  NextSeg,  NextSeg,  NextSeg ]),
        (SegmentTail,        Last,    /* */ [AtSegEnd, AtSegEnd, AtSegEnd, AtSegEnd, AtSegEnd, AtSegEnd]),
        (Overrun,            NotLast, /* */ [Damaged,  Damaged,  Damaged,  Damaged,  Damaged,  Damaged ]),
        (Overrun,            Last,    /* */ [Damaged,  Damaged,  Damaged,  Damaged,  Damaged,  Damaged ]),
        (PayloadCrcMismatch, NotLast, /* */ [Damaged,  Damaged,  Damaged,  Damaged,  Damaged,  Damaged ]),
        (PayloadCrcMismatch, Last,    /* */ [Damaged,  Damaged,  Damaged,  Damaged,  Damaged,  Damaged ]),
        (RecordMismatch,     NotLast, /* */ [Damaged,  Damaged,  Damaged,  Damaged,  Damaged,  Damaged ]),
        (RecordMismatch,     Last,    /* */ [Damaged,  Damaged,  Damaged,  Damaged,  Damaged,  Damaged ]),
    ];

    #[test]
    fn every_combination_has_the_action_of_the_table() {
        let mut checked = 0;
        for verdict in VERDICTS {
            for place in [NotLast, Last] {
                let rows: Vec<_> = TABLE
                    .iter()
                    .filter(|(v, p, _)| *v == verdict && *p == place)
                    .collect();
                assert_eq!(rows.len(), 1, "{verdict:?} in {place:?}: one row each");
                let (_, _, actions) = rows[0];
                for (checkpoint, expected) in CHECKPOINTS.into_iter().zip(actions) {
                    assert_eq!(
                        decide(checkpoint, verdict, place),
                        *expected,
                        "{checkpoint:?} x {verdict:?} in {place:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, CHECKPOINTS.len() * VERDICTS.len() * 2);
        assert_eq!(TABLE.len(), VERDICTS.len() * 2);
    }

    /// Fails to compile when a state, verdict or place is added without extending the table.
    #[test]
    fn the_table_lists_every_variant() {
        for checkpoint in CHECKPOINTS {
            match checkpoint {
                CheckpointState::Missing
                | CheckpointState::Corrupt
                | CheckpointState::Valid { .. }
                | CheckpointState::BeyondLog { .. } => {}
            }
        }
        for verdict in VERDICTS {
            match verdict {
                Valid | Zeroed | TornHeader | EndMarker | SegmentTail | Overrun
                | PayloadCrcMismatch | RecordMismatch => {}
            }
        }
        for place in [NotLast, Last] {
            match place {
                NotLast | Last => {}
            }
        }
    }

    #[test]
    fn checkpoint_is_judged_against_the_segments() {
        let read = |log_offset, clean_shutdown| CheckpointFile::Read {
            log_offset,
            clean_shutdown,
        };
        let segments = Some((1000, 5000));
        let cases = [
            (CheckpointFile::Missing, segments, CheckpointState::Missing),
            (CheckpointFile::Corrupt, segments, CheckpointState::Corrupt),
            (
                read(1000, false),
                segments,
                CheckpointState::Valid {
                    clean_shutdown: false,
                },
            ),
            (
                read(5000, true),
                segments,
                CheckpointState::Valid {
                    clean_shutdown: true,
                },
            ),
            (
                read(999, true),
                segments,
                CheckpointState::BeyondLog {
                    clean_shutdown: true,
                },
            ),
            (
                read(5001, false),
                segments,
                CheckpointState::BeyondLog {
                    clean_shutdown: false,
                },
            ),
            // No segment: only a checkpoint at the shard's base (here 0) is trusted.
            (
                read(0, true),
                None,
                CheckpointState::Valid {
                    clean_shutdown: true,
                },
            ),
            (
                read(4096, false),
                None,
                CheckpointState::BeyondLog {
                    clean_shutdown: false,
                },
            ),
        ];
        for (file, segments, expected) in cases {
            assert_eq!(
                CheckpointState::classify(file, segments, 0),
                expected,
                "{file:?} {segments:?}"
            );
        }
        assert!(CHECKPOINTS.iter().filter(|c| c.trusted()).count() == 2);
        assert!(!CheckpointState::Corrupt.clean_shutdown());
    }
}
