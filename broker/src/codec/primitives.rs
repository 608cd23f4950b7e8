//! Data representations (3.1.1 section 1.5; 5.0 section 1.5).
