export { type CustomNodeInstallOptions, type CustomNodeResult, installCustomNodes, installedCustomNodes, repositoryName } from './installer';
