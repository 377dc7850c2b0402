// CodeMirror 6's shared core, as web/assets/app.js uses it: one script that defines the global
// `CM` with an object per package. The language bundles (lang-*.js) take these same modules from
// `CM` (see build.mjs), so that there is one EditorState, one facet of each kind. Only the names
// listed here are kept (what the app uses and what the language packages import: build.mjs
// checks that none is missing), which keeps the bundle small.
import {
  EditorState, EditorSelection, Compartment, RangeSetBuilder, Annotation, Facet, RangeSet,
  StateEffect, StateField, combineConfig,
} from '@codemirror/state';
import {
  EditorView, Decoration, ViewPlugin, WidgetType, GutterMarker, keymap, lineNumbers,
  highlightActiveLine, highlightActiveLineGutter, activateHover, getPanel, gutter, hoverTooltip,
  logException, showPanel, showTooltip,
} from '@codemirror/view';
import {
  history, defaultKeymap, historyKeymap, indentMore, indentLess, undo, redo, cursorCharLeft,
  cursorCharRight, cursorLineUp, cursorLineDown,
} from '@codemirror/commands';
import {
  HighlightStyle, indentUnit, getIndentUnit, indentOnInput, bracketMatching, syntaxHighlighting,
  LRLanguage, LanguageSupport, continuedIndent, defineLanguageFacet, delimitedIndent, flatIndent,
  foldInside, foldNodeProp, indentNodeProp, sublanguageProp, syntaxTree,
} from '@codemirror/language';
import {
  closeBrackets, closeBracketsKeymap, snippetCompletion, ifNotIn, completeFromList,
} from '@codemirror/autocomplete';
import { tags, styleTags } from '@lezer/highlight';
import { IterMode, NodeWeakMap } from '@lezer/common';
import { ContextTracker, ExternalTokenizer, LRParser, LocalTokenGroup } from '@lezer/lr';

export const state = {
  EditorState, EditorSelection, Compartment, RangeSetBuilder, Annotation, Facet, RangeSet,
  StateEffect, StateField, combineConfig,
};
export const view = {
  EditorView, Decoration, ViewPlugin, WidgetType, GutterMarker, keymap, lineNumbers,
  highlightActiveLine, highlightActiveLineGutter, activateHover, getPanel, gutter, hoverTooltip,
  logException, showPanel, showTooltip,
};
export const commands = {
  history, defaultKeymap, historyKeymap, indentMore, indentLess, undo, redo, cursorCharLeft,
  cursorCharRight, cursorLineUp, cursorLineDown,
};
export const language = {
  HighlightStyle, indentUnit, getIndentUnit, indentOnInput, bracketMatching, syntaxHighlighting,
  LRLanguage, LanguageSupport, continuedIndent, defineLanguageFacet, delimitedIndent, flatIndent,
  foldInside, foldNodeProp, indentNodeProp, sublanguageProp, syntaxTree,
};
export const autocomplete = { closeBrackets, closeBracketsKeymap, snippetCompletion, ifNotIn, completeFromList };
export const highlight = { tags, styleTags };
export const common = { IterMode, NodeWeakMap };
export const lr = { ContextTracker, ExternalTokenizer, LRParser, LocalTokenGroup };
