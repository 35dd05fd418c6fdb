/**
 * Just enough of a Lua 5.1 lexer to check the function library's scoping
 * (library.test.ts): which names a file declares at its top level, which it
 * declares anywhere, and which it reads. Not a parser: a statement's extent is
 * approximated by the top-level `local` that opens it.
 */

export interface LuaToken {
  kind: 'name' | 'keyword' | 'string' | 'number' | 'symbol';
  text: string;
  /** block depth before the token (function, do, if and repeat open a block; end and until close it) */
  depth: number;
}

const KEYWORDS = new Set([
  'and', 'break', 'do', 'else', 'elseif', 'end', 'false', 'for', 'function', 'if', 'in',
  'local', 'nil', 'not', 'or', 'repeat', 'return', 'then', 'true', 'until', 'while',
]);
const OPENS = new Set(['function', 'do', 'if', 'repeat']);
const CLOSES = new Set(['end', 'until']);
const SYMBOLS = ['...', '..', '==', '~=', '<=', '>='];

/** The long bracket `[[`, `[=[`, ... opening at `at`: its level, or -1. */
function longBracket(source: string, at: number): number {
  if (source[at] !== '[') return -1;
  let i = at + 1;
  while (source[i] === '=') i++;
  return source[i] === '[' ? i - at - 1 : -1;
}

function skipLong(source: string, at: number, level: number): number {
  const close = `]${'='.repeat(level)}]`;
  const end = source.indexOf(close, at + level + 2);
  if (end < 0) throw new Error(`unclosed long bracket at ${at}`);
  return end + close.length;
}

export function luaTokens(source: string): LuaToken[] {
  const tokens: LuaToken[] = [];
  let depth = 0;
  let i = 0;
  const push = (kind: LuaToken['kind'], text: string) => {
    tokens.push({ kind, text, depth });
    if (kind === 'keyword' && OPENS.has(text)) depth++;
    // `while` and `for` open their block with `do`, which the line above counts
    if (kind === 'keyword' && CLOSES.has(text)) depth--;
  };
  while (i < source.length) {
    const c = source[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (source.startsWith('--', i)) {
      const level = longBracket(source, i + 2);
      if (level >= 0) i = skipLong(source, i + 2, level);
      else {
        const nl = source.indexOf('\n', i);
        i = nl < 0 ? source.length : nl + 1;
      }
    } else if (c === '"' || c === "'") {
      let j = i + 1;
      while (j < source.length && source[j] !== c) j += source[j] === '\\' ? 2 : 1;
      push('string', source.slice(i, j + 1));
      i = j + 1;
    } else if (longBracket(source, i) >= 0) {
      const end = skipLong(source, i, longBracket(source, i));
      push('string', source.slice(i, end));
      i = end;
    } else if (/[A-Za-z_]/.test(c)) {
      const name = /^[A-Za-z_][A-Za-z0-9_]*/.exec(source.slice(i, i + 256))![0];
      push(KEYWORDS.has(name) ? 'keyword' : 'name', name);
      i += name.length;
    } else if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(source[i + 1] ?? ''))) {
      const num = /^(0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?)/.exec(source.slice(i, i + 64))![0];
      push('number', num);
      i += num.length;
    } else {
      const symbol = SYMBOLS.find((s) => source.startsWith(s, i)) ?? c;
      push('symbol', symbol);
      i += symbol.length;
    }
  }
  return tokens;
}

/** The names of `local a, b` / `local function f` starting at token `at` (the `local`). */
function localNames(tokens: LuaToken[], at: number): string[] {
  const next = tokens[at + 1];
  if (next?.text === 'function') return [tokens[at + 2]!.text];
  const names: string[] = [];
  for (let i = at + 1; tokens[i]?.kind === 'name'; i += 2) {
    names.push(tokens[i]!.text);
    if (tokens[i + 1]?.text !== ',') break;
  }
  return names;
}

export interface LuaFileScope {
  /** names declared by a `local` at the file's top level, in order (a name declared twice counts twice) */
  topLevel: string[];
  /** every name the file declares somewhere: locals, parameters, loop variables */
  declared: Set<string>;
  /** every name the file reads or assigns as a variable (not as a field or a table key) */
  referenced: Set<string>;
  /** per top-level local: the names read from its `local` to the next top-level statement that declares one */
  uses: Map<string, Set<string>>;
  /** whether every block the file opens it also closes (so wrapping it in `do ... end` scopes it) */
  balanced: boolean;
}

export function luaFileScope(source: string): LuaFileScope {
  const tokens = luaTokens(source);
  const topLevel: string[] = [];
  const declared = new Set<string>();
  const referenced = new Set<string>();
  const uses = new Map<string, Set<string>>();
  const brackets: string[] = [];
  let current: Set<string> | undefined;
  let balanced = true;
  tokens.forEach((token, i) => {
    if (token.depth < 0) balanced = false;
    const previous = tokens[i - 1];
    if (token.text === 'local' && token.kind === 'keyword') {
      const names = localNames(tokens, i);
      names.forEach((name) => declared.add(name));
      if (token.depth === 0) {
        topLevel.push(...names);
        current = new Set();
        for (const name of names) uses.set(name, current);
      }
    } else if (token.text === 'function' || token.text === 'for') {
      // parameters and loop variables: the names up to `)`, `in` or `=`
      let j = token.text === 'function' ? tokens.findIndex((t, k) => k > i && t.text === '(') + 1 : i + 1;
      for (; tokens[j]?.kind === 'name' || tokens[j]?.text === ','; j++) {
        if (tokens[j]!.kind === 'name') declared.add(tokens[j]!.text);
      }
    } else if ('({['.includes(token.text) && token.kind === 'symbol') {
      brackets.push(token.text);
    } else if (')}]'.includes(token.text) && token.kind === 'symbol') {
      brackets.pop();
    }
    if (token.kind !== 'name') return;
    if (previous && (previous.text === '.' || previous.text === ':') && previous.kind === 'symbol') return;
    if (brackets.at(-1) === '{' && tokens[i + 1]?.text === '=') return; // a table constructor's key
    referenced.add(token.text);
    current?.add(token.text);
  });
  const last = tokens.at(-1);
  if (last && last.depth + (CLOSES.has(last.text) ? -1 : OPENS.has(last.text) ? 1 : 0) !== 0) balanced = false;
  return { topLevel, declared, referenced, uses, balanced };
}
