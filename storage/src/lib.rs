//! Persistent store over sled.
