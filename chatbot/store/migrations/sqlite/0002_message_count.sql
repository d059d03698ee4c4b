-- Keep each conversation's message count on its row. append_turn checks it under
-- the write lock without counting messages, and listing shows it without a join.

ALTER TABLE conversations ADD COLUMN message_count INTEGER NOT NULL DEFAULT 0;

UPDATE conversations
   SET message_count = (SELECT count(*) FROM messages WHERE messages.conversation_id = conversations.id);
