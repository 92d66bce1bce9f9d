// Lint: typescript-eslint's recommended rules, plus the few Cairn leans on (no floating
// promises would need type info on every file; kept to what runs fast on 2 cores).
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'wasm/kernel.ts', 'wasm/*.wasm'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-syntax': [
        'error',
        { selector: "CallExpression[callee.name='pkill']", message: 'Stop processes by pid.' },
      ],
    },
  },
);
