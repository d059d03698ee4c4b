-- Conversations, their messages and browser sessions.
-- Timestamps are float epoch seconds, the unit of the domain values.

CREATE TABLE conversations (
    id            TEXT PRIMARY KEY,
    owner         TEXT,
    title         TEXT NOT NULL DEFAULT '',
    provider      TEXT,
    model         TEXT,
    system_prompt TEXT,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
);

-- Listing a session's conversations, newest first, reads this index in order:
-- no sort and no scan of other owners' rows.
CREATE INDEX conversations_owner_updated
    ON conversations (owner, updated_at DESC, created_at DESC);

-- Loading a conversation is a range scan of the primary key (conversation_id, seq).
CREATE TABLE messages (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content         TEXT NOT NULL,
    input_tokens    INTEGER,
    output_tokens   INTEGER,
    stopped         INTEGER NOT NULL DEFAULT 0 CHECK (stopped IN (0, 1)),
    created_at      REAL NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);

CREATE TABLE sessions (
    id                   TEXT PRIMARY KEY,
    current_conversation TEXT,
    connection           BLOB,
    created_at           REAL NOT NULL,
    updated_at           REAL NOT NULL
);
