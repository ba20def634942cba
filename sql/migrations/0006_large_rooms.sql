-- Large rooms (docs/architecture.md, "Large rooms"): past REALCHAT_LARGE_ROOM_MEMBERS members a
-- conversation is delivered by room interest (the nodes that hold any of its members' connections)
-- instead of by member list and per-user presence, so offline members cost nothing per message.
-- Set by the gateway when members are added; never unset.
ALTER TABLE conversations ADD COLUMN large boolean NOT NULL DEFAULT false;

-- Kept by the writes that add (and later remove) members, so no request counts a room's members.
ALTER TABLE conversations ADD COLUMN member_count integer NOT NULL DEFAULT 0 CHECK (member_count >= 0);
UPDATE conversations c SET member_count = (SELECT count(*) FROM members m WHERE m.conversation_id = c.id);
