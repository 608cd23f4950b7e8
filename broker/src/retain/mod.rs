//! Retained messages, indexed by topic for matching against filters.
