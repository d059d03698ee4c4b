-- Conversations, their messages and browser sessions.
-- Timestamps are float epoch seconds (double precision), the unit of the domain values.

CREATE TABLE conversations (
    id            text PRIMARY KEY,
    owner         text,
    title         text NOT NULL DEFAULT '',
    provider      text,
    model         text,
    system_prompt text,
    created_at    double precision NOT NULL,
    updated_at    double precision NOT NULL
);

-- Listing a session's conversations, newest first, reads this index in order:
-- no sort and no scan of other owners' rows.
CREATE INDEX conversations_owner_updated
    ON conversations (owner, updated_at DESC, created_at DESC);

-- The planner does not treat "owner IS NULL" as pinning the first column, so it would
-- sort every unowned conversation (the command line's) to list them; this one it reads in order.
CREATE INDEX conversations_unowned_updated
    ON conversations (updated_at DESC, created_at DESC) WHERE owner IS NULL;

-- Loading a conversation is a range scan of the primary key (conversation_id, seq).
CREATE TABLE messages (
    conversation_id text NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             integer NOT NULL,
    role            text NOT NULL CHECK (role IN ('user', 'assistant')),
    content         text NOT NULL,
    input_tokens    integer,
    output_tokens   integer,
    stopped         boolean NOT NULL DEFAULT false,
    created_at      double precision NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);

CREATE TABLE sessions (
    id                   text PRIMARY KEY,
    current_conversation text,
    connection           bytea,
    created_at           double precision NOT NULL,
    updated_at           double precision NOT NULL
);
