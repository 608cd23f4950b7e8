//! Topic-filter trie: which subscriptions match a topic name.
