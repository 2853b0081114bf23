// A chat room over the node's WebSocket (`/chat/{app}/{key}`, docs/chat-protocol.md):
// joins, reconnects when the node asks it to (1012) or the connection drops, and hands
// each event to the page. Only parsed JSON reaches the page; it renders text only.

/** What an `error` code means, for a viewer. */
const ERRORS = {
  sign_in_required: 'Sign in to chat: add a token with a name at the top of the page.',
  name_required: 'Your token has no name, so you can read but not post.',
  empty: 'Type something first.',
  too_long: 'That message is too long.',
  blocked_word: 'That message has a word this chat does not allow.',
  muted: 'You are muted for now.',
  banned: 'You are banned from this chat.',
  rate_limited: 'You are sending too fast: wait a moment.',
  slow_mode: 'Slow mode is on: wait a little before sending again.',
  room_full: 'The chat is full right now.',
  forbidden: 'Only moderators can do that.',
  not_found: 'That message is already gone.',
  busy: 'The chat is busy: try again.',
  invalid: 'The chat did not understand that.',
};

export function explain(code, reason) {
  if (code === 'rejected') return `Not sent: ${reason}`;
  return ERRORS[code] || `The chat refused that (${reason || code}).`;
}

/** Longest wait between two reconnection attempts. */
const MAX_BACKOFF_MS = 15000;

/** Connects to the room `app/key`; `on.event(event)` gets each event, `on.state(state,
 * detail)` the connection's state: 'open', 'retrying', 'closed'. */
export function connect(app, key, token, on) {
  let socket = null;
  let backoff = 1000;
  let stopped = false;
  let opened = false;

  const url = () => {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const query = token ? `?token=${encodeURIComponent(token)}` : '';
    return `${scheme}//${location.host}/chat/${app}/${key}${query}`;
  };

  const open = () => {
    opened = false;
    socket = new WebSocket(url());
    socket.addEventListener('open', () => {
      opened = true;
      backoff = 1000;
      on.state('open');
    });
    socket.addEventListener('message', (message) => {
      if (typeof message.data !== 'string') return;
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (event && typeof event === 'object' && typeof event.type === 'string') on.event(event);
    });
    socket.addEventListener('close', (close) => {
      if (stopped) return;
      // 1008: refused as we are (banned, room full): do not come back.
      if (close.code === 1008) {
        on.state('closed', close.reason || 'policy');
        return;
      }
      const detail = opened
        ? 'The chat connection dropped; reconnecting…'
        : 'Could not join the chat (the stream may not be live, or the token is not accepted); retrying…';
      on.state('retrying', detail);
      setTimeout(open, backoff);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    });
  };
  open();

  return {
    send(command) {
      if (!socket || socket.readyState !== WebSocket.OPEN) return false;
      socket.send(JSON.stringify(command));
      return true;
    },
    close() {
      stopped = true;
      socket?.close(1000);
    },
  };
}
