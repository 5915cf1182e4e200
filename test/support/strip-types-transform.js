// Jest transform: erase TypeScript types with Node's own stripper. Positions are preserved (types become
// whitespace), so stack traces point at the right lines without source maps. Type checking is `tsc --noEmit`.
import { stripTypeScriptTypes } from 'node:module';

export default {
  process(sourceText) {
    return { code: stripTypeScriptTypes(sourceText, { mode: 'strip' }) };
  },
};
