// llm_magic's JupyterLab extension: ghost-text completions from the kernel's own model.

import type { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICompletionProviderManager } from '@jupyterlab/completer';

import { LlmMagicInlineProvider, PROVIDER_ID } from './provider';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'llm-magic:inline-completer',
  description: 'Ghost-text completions in notebooks and consoles from the model llm_magic holds in the kernel.',
  autoStart: true,
  requires: [ICompletionProviderManager],
  activate: (app: JupyterFrontEnd, manager: ICompletionProviderManager): void => {
    if (typeof manager.registerInlineProvider !== 'function') {
      console.warn(`${PROVIDER_ID}: this JupyterLab has no inline completer (4.1 or newer needed)`);
      return;
    }
    manager.registerInlineProvider(new LlmMagicInlineProvider());
  }
};

export default plugin;
