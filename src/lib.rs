//! ZenLive (in progress)
