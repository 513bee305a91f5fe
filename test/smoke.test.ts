import { describe, it, expect } from 'vitest';
import { tempDir, testSystem } from './helpers/env.ts';
describe('smoke', () => {
  it('runs with await using', async () => {
    let p = '';
    {
      await using d = await tempDir();
      p = d.path;
      const r = await testSystem().run('ls', [p]);
      expect(r.exitCode).toBe(0);
    }
    await expect(testSystem().run('ls', [p])).rejects.toThrow(/No such file/);
  });
});
